//! The `oscarflow` binary as users run it: `check`, `replay` (golden reports), `dlq`, `run`.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn oscarflow(args: &[&str], cwd: &Path) -> Output {
    oscarflow_in(args, cwd, &[])
}

/// `oscarflow <args>` in `cwd` with `envs` set (and `OSCARFLOW_DATABASE_URL` only when given
/// there).
fn oscarflow_in(args: &[&str], cwd: &Path, envs: &[(&str, &str)]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(cwd)
        .env_remove("OSCARFLOW_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .envs(envs.iter().copied())
        .output()
        .expect("run oscarflow")
}

/// The outbound example pipelines (`fax_out`, `texts`), loaded with their RingCentral
/// secrets set.
fn outbound_examples() -> Vec<(&'static str, oscarflow::config::PipelineConfig)> {
    for v in [
        "RINGCENTRAL_CLIENT_ID",
        "RINGCENTRAL_CLIENT_SECRET",
        "RINGCENTRAL_JWT",
    ] {
        std::env::set_var(v, "set");
    }
    ["fax_out", "texts"]
        .into_iter()
        .map(|name| {
            let p = oscarflow::config::load_file(
                &repo().join(format!("pipelines/{name}.toml.example")),
            )
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            (name, p)
        })
        .collect()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn check_reports_every_problem_with_file_line_and_column() {
    let o = oscarflow(&["check", "tests/data/bad_pipelines"], &repo());
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let expected = [
        "tests/data/bad_pipelines/bad_archive.toml:12:12: error: archive: `endpoint` must be an http:// or https:// URL",
        "tests/data/bad_pipelines/bad_archive.toml:13:21: error: archive.access_key_id_env: environment variable `OSCARFLOW_TEST_VARIABLE_THAT_IS_NOT_SET` is not set",
        "tests/data/bad_pipelines/bad_archive.toml:15:18: error: archive: `sse_kms_key_id` needs `server_side_encryption = \"aws:kms\"`",
        "tests/data/bad_pipelines/bad_duration.toml:4:11: error: sources.inbox: invalid duration `5 parsecs`",
        "tests/data/bad_pipelines/duplicate_id.toml:5:9: error: stages.parse: duplicate component id (already used in sources)",
        "tests/data/bad_pipelines/many_problems.toml:3:47: error: [pipeline]: invalid duration `fast`",
        "tests/data/bad_pipelines/many_problems.toml:6:8: error: sources.inbox: unknown source type `ftp` (known: folder, mllp, excelleris, iha_poi, sftp, ringcentral_fax",
        "tests/data/bad_pipelines/many_problems.toml:12:21: error: stages.parse: invalid value: integer `-1`, expected usize",
        "tests/data/bad_pipelines/many_problems.toml:16:11: error: stages.match: unknown input `prase`",
        "tests/data/bad_pipelines/many_problems.toml:21:12: error: sinks.oscar: unknown variant `colour`",
        "tests/data/bad_pipelines/missing_env.toml:2:20: error: pipeline.database_url_env: environment variable `OSCARFLOW_TEST_VARIABLE_THAT_IS_NOT_SET` is not set",
        "tests/data/bad_pipelines/unknown_field.toml:4:1: error: sources.inbox: unknown field `colour`",
        "tests/data/bad_pipelines/unknown_input.toml:7:11: error: stages.parse: unknown input `inbx` (known: inbox)",
        "tests/data/bad_pipelines/wrong_type.toml:2:20: error: [pipeline]: invalid type: string \"sixteen\", expected usize",
        "tests/data/bad_pipelines/wrong_type.toml:15:15: error: sinks.oscar: invalid type: boolean `true`, expected usize",
    ];
    for e in expected {
        assert!(
            out.lines().any(|l| l.starts_with(e)),
            "missing diagnostic:\n  {e}\nin:\n{out}"
        );
    }
    // Every diagnostic line has the file:line:col shape.
    for l in out.lines().filter(|l| l.contains("error:")) {
        let mut parts = l.splitn(4, ':');
        let (file, line, col) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        assert!(
            file.ends_with(".toml")
                && line.parse::<usize>().is_ok()
                && col.parse::<usize>().is_ok(),
            "{l}"
        );
    }
}

#[test]
fn check_accepts_the_shipped_pipelines() {
    let o = oscarflow(&["check", "pipelines"], &repo());
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

/// The secret variables the example pipelines name.
const EXAMPLE_SECRETS: [&str; 11] = [
    "EXCELLERIS_USER",
    "EXCELLERIS_PASSWORD",
    "EXCELLERIS_P12_PASSWORD",
    "RINGCENTRAL_CLIENT_ID",
    "RINGCENTRAL_CLIENT_SECRET",
    "RINGCENTRAL_JWT",
    "ARCHIVE_S3_ACCESS_KEY_ID",
    "ARCHIVE_S3_SECRET_ACCESS_KEY",
    "SFTP_LABS_USER",
    "IHA_POI_USER",
    "IHA_POI_PASSWORD",
];

/// The example pipelines (`pipelines/*.toml.example`) are valid once their secrets are set,
/// and `check` names every unset secret variable when they are not.
#[test]
fn check_accepts_the_example_pipelines_and_names_unset_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let mut n = 0;
    for e in std::fs::read_dir(repo().join("pipelines"))
        .unwrap()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".toml.example") {
            std::fs::copy(e.path(), tmp.path().join(format!("{stem}.toml"))).unwrap();
            n += 1;
        }
    }
    assert!(n >= 2, "example pipelines found: {n}");
    // An example for every source type.
    let mut all: String = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    all.push_str(&std::fs::read_to_string(repo().join("pipelines/lab_inbox.toml")).unwrap());
    for t in oscarflow::sources::SourceConfig::TYPES {
        assert!(
            all.contains(&format!("type = \"{t}\"")),
            "no example pipeline with a `{t}` source"
        );
    }
    let vars = EXAMPLE_SECRETS;
    let o = Command::new(bin())
        .args(["check"])
        .arg(tmp.path())
        .envs(vars.iter().map(|v| (*v, "set")))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let o = Command::new(bin())
        .args(["check"])
        .arg(tmp.path())
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    for v in vars {
        assert!(
            out.contains(&format!("environment variable `{v}` is not set")),
            "{out}"
        );
    }
}

/// `check DIR` (run from the repository, the examples' secrets set) must fail; its line that
/// says `what`.
fn conflict_line(dir: &Path, what: &str) -> String {
    let o = Command::new(bin())
        .arg("check")
        .arg(dir)
        .current_dir(repo())
        .envs(EXAMPLE_SECRETS.iter().map(|v| (*v, "set")))
        .output()
        .unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    out.lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string()
}

/// Two pipelines that consume one inbox (spelled differently) are refused by `check`,
/// with both positions; so are two pipelines sending one fax line.
#[test]
fn check_reports_two_pipelines_consuming_one_input_with_both_positions() {
    let tmp = tempfile::tempdir().unwrap();
    let lab = std::fs::read_to_string(repo().join("pipelines/lab_inbox.toml")).unwrap();
    std::fs::write(tmp.path().join("a_labs.toml"), &lab).unwrap();
    let other = lab
        .replace("name = \"lab_inbox\"", "name = \"second\"")
        .replace("path = \"inbox\"", "path = \"./x/../inbox/\"");
    std::fs::write(tmp.path().join("b_second.toml"), other).unwrap();
    let line = conflict_line(tmp.path(), "reads the same folder");
    // This file's position, and the first consumer's file and position.
    assert!(line.contains("b_second.toml:"), "{line}");
    assert!(
        line.contains("as lab_inbox.sources.inbox (") && line.contains("a_labs.toml:"),
        "{line}"
    );
    // Two pipelines sending one OSCAR fax line would claim each other's faxes.
    let fax = std::fs::read_to_string(repo().join("pipelines/fax_out.toml.example")).unwrap();
    let lines = tempfile::tempdir().unwrap();
    std::fs::write(lines.path().join("a_fax.toml"), &fax).unwrap();
    std::fs::write(
        lines.path().join("b_fax.toml"),
        fax.replace("name = \"fax_out\"", "name = \"fax_out_2\""),
    )
    .unwrap();
    let line = conflict_line(lines.path(), "reads the same OSCAR fax line");
    assert!(
        line.contains("b_fax.toml:")
            && line.contains("as fax_out.sources.outbox (")
            && line.contains("a_fax.toml:"),
        "{line}"
    );
    // The shipped examples, all enabled together, share no input.
    let all = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(repo().join("pipelines"))
        .unwrap()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().replace(".example", "");
        std::fs::copy(e.path(), all.path().join(name)).unwrap();
    }
    let vars = EXAMPLE_SECRETS;
    let o = Command::new(bin())
        .arg("check")
        .arg(all.path())
        .envs(vars.iter().map(|v| (*v, "set")))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

/// `check` reads the daemon's `oscarflow.toml` as such (it printed nine false pipeline
/// errors for the shipped example): the example with the pipelines passes once its secrets
/// are set, and a broken config is reported at its positions.
#[test]
fn check_validates_the_daemon_config_with_the_pipelines() {
    let secrets = [
        "OSCARFLOW_DATABASE_URL",
        "RINGCENTRAL_CLIENT_ID",
        "RINGCENTRAL_CLIENT_SECRET",
        "RINGCENTRAL_JWT",
    ];
    let o = Command::new(bin())
        .args(["check", "deploy/oscarflow.toml.example", "pipelines/"])
        .current_dir(repo())
        .envs(secrets.iter().map(|v| (*v, "set")))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("1 daemon config file(s) OK"),
        "{}",
        stdout(&o)
    );
    // Unset secrets are named, at the line that names them (the config's own; the
    // RingCentral ones are the pipelines', named by the test of the example pipelines).
    let o = Command::new(bin())
        .args(["check", "--config", "deploy/oscarflow.toml.example"])
        .current_dir(repo())
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    for v in &secrets[..1] {
        assert!(
            stdout(&o).contains(&format!("environment variable `{v}` is not set")),
            "{}",
            stdout(&o)
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("oscarflow.toml");
    let example = std::fs::read_to_string(repo().join("deploy/oscarflow.toml.example")).unwrap();
    std::fs::write(
        &bad,
        example.replace("listen = \"127.0.0.1:9464\"", "listen = \"0.0.0.0:9464\""),
    )
    .unwrap();
    let o = Command::new(bin())
        .arg("check")
        .arg(&bad)
        .envs(secrets.iter().map(|v| (*v, "set")))
        .output()
        .unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let listen_line = example
        .lines()
        .position(|l| l.starts_with("listen = "))
        .expect("the example sets listen")
        + 1;
    assert!(
        out.contains(&format!(
            "oscarflow.toml:{listen_line}:1: error: listen: off loopback the endpoint needs a bearer token"
        )),
        "{out}"
    );
    // A config of an earlier version: its outbound fax line (`[[fax_outbox]]`) is refused
    // at its position, with the pipeline file that replaces it.
    std::fs::write(
        &bad,
        "listen = \"off\"\n\n[[fax_outbox]]\nname = \"clinic\"\nfax_line = \"6045550100\"\ndocument_dir = \"/d\"\n\n[fax_outbox.ringcentral]\nclient_id_env = \"A\"\nclient_secret_env = \"B\"\njwt_env = \"C\"\n",
    )
    .unwrap();
    let o = Command::new(bin()).arg("check").arg(&bad).output().unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("oscarflow.toml:3:1: error: fax_outbox[0] is no longer read")
            && out.contains("<pipelines_dir>/fax_out_clinic.toml")
            && out.contains("type = \"oscar_fax_queue\"")
            && out.contains("[sinks.send.ringcentral]"),
        "{out}"
    );
    std::fs::write(&bad, "state_dir = \"x\"\ncolour = 1\n").unwrap();
    let o = Command::new(bin()).arg("check").arg(&bad).output().unwrap();
    assert!(
        stdout(&o).contains("oscarflow.toml:2:1: error: unknown field `colour`"),
        "{}",
        stdout(&o)
    );
}

/// A parse stage whose `lab_type` contradicts the feed its source fixes is refused by
/// `check`, with the position of the wiring; the source's own `lab_type` says otherwise.
#[test]
fn check_refuses_a_lab_type_that_contradicts_the_sources_feed() {
    let tmp = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(repo().join("pipelines/iha_poi.toml.example")).unwrap();
    let vars = [("IHA_POI_USER", "u"), ("IHA_POI_PASSWORD", "p")];
    let check = |text: &str| {
        let path = tmp.path().join("iha.toml");
        std::fs::write(&path, text).unwrap();
        Command::new(bin())
            .arg("check")
            .arg(&path)
            .envs(vars)
            .output()
            .unwrap()
    };
    let contradicting = example.replace(
        "inputs = [\"iha\"]",
        "inputs = [\"iha\"]\nlab_type = \"PATHL7\"",
    );
    let o = check(&contradicting);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(
        out.contains(
            "stages.parse: lab_type `PATHL7` contradicts its input `iha`, whose feed is `IHAPOI`"
        ),
        "{out}"
    );
    assert!(out.contains("iha.toml:"), "{out}");
    // OSCAR's and Expedius' name for the same feed agrees with the source.
    let agreeing = example.replace(
        "inputs = [\"iha\"]",
        "inputs = [\"iha\"]\nlab_type = \"IHA\"",
    );
    let o = check(&agreeing);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    // Saying otherwise at the source.
    let both = contradicting.replace("# lab_type = \"IHAPOI\"", "lab_type = \"PATHL7\"");
    let o = check(&both);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

/// The JSON report without the machine-specific database path.
fn normalised_report(o: &Output) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON report");
    v.as_object_mut().unwrap().remove("database");
    if let Some(files) = v["files"].as_array_mut() {
        for f in files {
            f.as_object_mut().unwrap().remove("dead_letter_ids");
            // Row ids depend on the order concurrent imports commit in.
            for m in f["messages"].as_array_mut().into_iter().flatten() {
                m.as_object_mut().unwrap().remove("lab_no");
            }
        }
    }
    v
}

fn assert_golden(name: &str, actual: &serde_json::Value) {
    let path = repo().join("tests/golden").join(name);
    let pretty = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &pretty).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("golden file {} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(pretty, expected, "report differs from {}", path.display());
}

#[test]
fn replay_imports_every_fixture_then_reports_all_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().to_str().unwrap();
    let first = oscarflow(
        &[
            "replay",
            "fixtures/hl7",
            "--json",
            "--seed",
            "fixtures/sql/bc_clinic.sql",
            "--state-dir",
            state,
        ],
        &repo(),
    );
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let report = normalised_report(&first);
    assert_golden("replay_fixtures_hl7.json", &report);
    let t = &report["totals"];
    assert_eq!(
        t["imported"], t["messages_found"],
        "every fixture message imported"
    );
    assert_eq!(t["dead_lettered"], 0);

    let second = oscarflow(
        &["replay", "fixtures/hl7", "--json", "--state-dir", state],
        &repo(),
    );
    assert_eq!(second.status.code(), Some(0));
    let again = normalised_report(&second);
    assert_eq!(again["totals"]["imported"], 0);
    assert_eq!(again["totals"]["duplicates"], t["messages_found"]);
    for f in again["files"].as_array().unwrap() {
        assert_eq!(f["imported"], 0, "{f}");
        assert_eq!(f["duplicates"], f["messages_found"], "{f}");
    }
    // The journal has every message imported by the first run and every file of the second
    // as a duplicate, written before replay exited.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(common::sqlite_store(tmp.path()));
    let q = |sql: &str| rt.block_on(common::count(&store, sql));
    assert_eq!(
        serde_json::json!(q(
            "SELECT COUNT(*) FROM oscarflow_journal WHERE outcome = 'imported'"
        )),
        t["imported"]
    );
    let files_with_messages = again["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["duplicates"].as_i64() > Some(0))
        .count() as i64;
    assert_eq!(
        q("SELECT COUNT(*) FROM oscarflow_journal WHERE outcome = 'duplicate'"),
        files_with_messages
    );
}

#[test]
fn replay_dead_letters_bad_input_and_keeps_the_good_messages_of_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().to_str().unwrap();
    let o = oscarflow(
        &["replay", "fixtures/bad", "--json", "--state-dir", state],
        &repo(),
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "bad input is dead-lettered, not fatal"
    );
    assert_golden("replay_fixtures_bad.json", &normalised_report(&o));
}

/// `--config` points the store commands at the daemon's own database (here named by the
/// config's `database_url_env`), not at an empty `./var/` in whatever directory the
/// operator stands in.
#[test]
fn dlq_and_replay_with_config_use_the_daemons_configured_database() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("oscarflow.toml");
    let example = std::fs::read_to_string(repo().join("deploy/oscarflow.toml.example")).unwrap();
    std::fs::write(
        &config,
        example.replace("\"OSCARFLOW_DATABASE_URL\"", "\"CLINIC_DB_URL_FOR_TEST\""),
    )
    .unwrap();
    let db = format!("sqlite://{}", tmp.path().join("daemon.db").display());
    let run = |args: &[&str]| {
        Command::new(bin())
            .args(args)
            .current_dir(tmp.path())
            .env_remove("OSCARFLOW_DATABASE_URL")
            .env("CLINIC_DB_URL_FOR_TEST", &db)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let bad = repo().join("fixtures/bad");
    let c = config.to_str().unwrap();
    let o = run(&["replay", bad.to_str().unwrap(), "--config", c, "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let dead = r["totals"]["dead_lettered"].as_u64().unwrap();
    assert!(dead > 0, "{r}");
    let listed = run(&["dlq", "list", "--json", "--config", c]);
    let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len() as u64, dead, "{rows}");
    // Without --config: the embedded store of this directory, which has none.
    let listed = run(&["dlq", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 0, "{rows}");
    // An unset variable is a clear error, not an empty list.
    let o = Command::new(bin())
        .args(["dlq", "list", "--config", c])
        .current_dir(tmp.path())
        .env_remove("OSCARFLOW_DATABASE_URL")
        .env_remove("CLINIC_DB_URL_FOR_TEST")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("`CLINIC_DB_URL_FOR_TEST` (database_url_env) is not set"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A secret pasted into a `*_env` setting (the value instead of its variable's name) is
/// never echoed by `check`: the problem is named at its position without the value.
#[test]
fn check_never_echoes_a_secret_written_where_a_variable_name_belongs() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = "eyJhbGciOiJSUzI1NiJ9.PASTED-JWT-VALUE";
    let fax = std::fs::read_to_string(repo().join("pipelines/fax_out.toml.example"))
        .unwrap()
        .replace(
            "jwt_env = \"RINGCENTRAL_JWT\"",
            &format!("jwt_env = \"{secret}\""),
        );
    std::fs::write(tmp.path().join("fax_out.toml"), fax).unwrap();
    let o = Command::new(bin())
        .arg("check")
        .arg(tmp.path())
        .envs(EXAMPLE_SECRETS.iter().map(|v| (*v, "set")))
        .output()
        .unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        !out.contains("PASTED-JWT-VALUE"),
        "the secret is echoed: {out}"
    );
    assert!(
        out.contains("sinks.send.jwt_env: this setting must name an environment variable"),
        "{out}"
    );
}

/// The quick start outside systemd (umask 022) leaves nothing that holds PHI readable by
/// other users: the embedded store, its journal files and the state directory are owner-only.
#[test]
fn a_replay_under_umask_022_leaves_no_file_readable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 022; exec '{}' replay fixtures/hl7 --state-dir '{}'",
            bin().display(),
            state.display()
        ))
        .current_dir(repo())
        .env_remove("OSCARFLOW_DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let mut seen = 0;
    let mut stack = vec![state.clone()];
    while let Some(p) = stack.pop() {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is {:o}", p.display(), mode & 0o777);
        seen += 1;
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert!(seen >= 2, "the state directory and the store");
}

/// Input file names often carry the patient's name: `dlq list` and `dlq show` do not print
/// an input's path unless asked with `--show-origin`.
#[test]
fn dlq_list_and_show_hide_the_inputs_path_unless_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let state_s = state.to_str().unwrap();
    // A synthetic name, as a clinic's scanner or export names a file.
    let named = tmp.path().join("ZZTEST_SOMEONE_lab.hl7");
    std::fs::write(&named, b"not an HL7 message").unwrap();
    let o = oscarflow(
        &[
            "replay",
            named.to_str().unwrap(),
            "--json",
            "--state-dir",
            state_s,
        ],
        &repo(),
    );
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = r["files"][0]["dead_letter_ids"][0]
        .as_str()
        .unwrap()
        .to_string();
    for args in [
        vec!["dlq", "list", "--json"],
        vec!["dlq", "list"],
        vec!["dlq", "show", &id],
        vec!["dlq", "show", &id, "--json"],
    ] {
        let o = oscarflow(&[&args[..], &["--state-dir", state_s]].concat(), &repo());
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        let out = stdout(&o);
        assert!(
            !out.contains("ZZTEST_SOMEONE"),
            "{args:?} shows the path: {out}"
        );
        if args.contains(&"show") {
            assert!(out.contains("--show-origin"), "{out}");
        }
    }
    for args in [
        vec!["dlq", "show", &id, "--show-origin"],
        vec!["dlq", "list", "--json", "--show-origin"],
    ] {
        let o = oscarflow(&[&args[..], &["--state-dir", state_s]].concat(), &repo());
        assert!(stdout(&o).contains("ZZTEST_SOMEONE_lab.hl7"), "{args:?}");
    }
}

#[test]
fn dlq_show_returns_the_original_bytes_and_retry_redrives_through_the_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let state_s = state.to_str().unwrap();
    let lab = repo().join("fixtures/hl7/pathl7/matched_chem.hl7");
    // A pipeline that only imports ADT: the ORU lab is rejected as unsupported.
    let strict = tmp.path().join("strict.toml");
    let pipeline = |types: &str| {
        format!(
            "[pipeline]\nname = \"strict_lab\"\n[sources.in]\ntype = \"folder\"\npath = \".\"\n[stages.parse]\ntype = \"parse_hl7\"\ninputs = [\"in\"]\nmessage_types = [{types}]\n[stages.match]\ntype = \"match_patient\"\ninputs = [\"parse\"]\n[sinks.oscar]\ntype = \"oscar_lab\"\ninputs = [\"match\"]\n"
        )
    };
    std::fs::write(&strict, pipeline("\"ADT\"")).unwrap();
    let o = oscarflow(
        &[
            "replay",
            lab.to_str().unwrap(),
            "--pipeline",
            strict.to_str().unwrap(),
            "--json",
            "--state-dir",
            state_s,
        ],
        &repo(),
    );
    assert_eq!(o.status.code(), Some(0));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["totals"]["dead_lettered"], 1);
    let id = r["files"][0]["dead_letter_ids"][0]
        .as_str()
        .unwrap()
        .to_string();

    let listed = oscarflow(&["dlq", "list", "--json", "--state-dir", state_s], &repo());
    let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(rows[0]["id"], id.as_str());
    assert_eq!(rows[0]["reason"], "unsupported_message");
    assert_eq!(rows[0]["pipeline"], "strict_lab");

    let raw = oscarflow(
        &["dlq", "show", &id, "--raw", "--state-dir", state_s],
        &repo(),
    );
    assert_eq!(
        raw.stdout,
        std::fs::read(&lab).unwrap(),
        "dead letter holds the file's bytes exactly"
    );

    // The integrator fixes the pipeline; the dead letter is re-driven through it.
    let dir = tmp.path().join("pipelines");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("strict.toml"), pipeline("\"ORU\"")).unwrap();
    let retried = oscarflow(
        &[
            "dlq",
            "retry",
            &id,
            "--pipelines",
            dir.to_str().unwrap(),
            "--state-dir",
            state_s,
        ],
        &repo(),
    );
    assert_eq!(
        retried.status.code(),
        Some(0),
        "{}{}",
        stdout(&retried),
        String::from_utf8_lossy(&retried.stderr)
    );
    assert!(
        stdout(&retried).contains(&format!("{id}  resolved  (imported 1")),
        "{}",
        stdout(&retried)
    );
    let open = oscarflow(&["dlq", "list", "--json", "--state-dir", state_s], &repo());
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&open.stdout).unwrap(),
        serde_json::json!([])
    );
    // Re-driving again finds nothing open.
    let again = oscarflow(
        &[
            "dlq",
            "retry",
            "--all",
            "--pipelines",
            dir.to_str().unwrap(),
            "--state-dir",
            state_s,
        ],
        &repo(),
    );
    assert!(stdout(&again).contains("nothing to retry"));

    let purge = oscarflow(
        &[
            "dlq",
            "purge",
            "--all",
            "--status",
            "resolved",
            "--state-dir",
            state_s,
        ],
        &repo(),
    );
    assert!(stdout(&purge).contains("purged 1"), "{}", stdout(&purge));
}

#[test]
fn run_drains_and_exits_zero_on_sigterm_with_nothing_half_written() {
    let tmp = tempfile::tempdir().unwrap();
    let inbox = tmp.path().join("inbox");
    let processed = tmp.path().join("processed");
    let pipelines = tmp.path().join("pipelines");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::create_dir_all(&pipelines).unwrap();
    std::fs::write(
        pipelines.join("lab.toml"),
        format!(
            "[sources.inbox]\ntype = \"folder\"\npath = \"{}\"\nprocessed_dir = \"{}\"\nmin_age = \"0s\"\npoll_interval = \"50ms\"\n[stages.parse]\ntype = \"parse_hl7\"\ninputs = [\"inbox\"]\n[stages.match]\ntype = \"match_patient\"\ninputs = [\"parse\"]\n[sinks.oscar]\ntype = \"oscar_lab\"\ninputs = [\"match\"]\n",
            inbox.display(),
            processed.display()
        ),
    )
    .unwrap();
    let total = 200;
    for i in 0..total {
        std::fs::write(
            inbox.join(format!("lab{i:03}.hl7")),
            variant("fixtures/hl7/pathl7/multi_message.hl7", i),
        )
        .unwrap();
    }
    let mut child = Command::new(bin())
        .args([
            "run",
            "--pipelines",
            pipelines.to_str().unwrap(),
            "--state-dir",
            tmp.path().join("state").to_str().unwrap(),
            "--grace-period",
            "20s",
            "--listen",
            "off",
        ])
        .env_remove("OSCARFLOW_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let it work for a while, then stop it mid-stream.
    let started = Instant::now();
    while std::fs::read_dir(&processed)
        .map(|d| d.count())
        .unwrap_or(0)
        < 5
        && started.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let stopped = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(25),
            "did not exit within the grace period"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{}", {
        let mut s = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut s).ok();
        s
    });

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = sqlite_store(&tmp.path().join("state")).await;
        let files = count(&store, "SELECT COUNT(*) FROM fileUploadCheck").await;
        let done = std::fs::read_dir(&processed).unwrap().count() as i64;
        let left = std::fs::read_dir(&inbox).unwrap().filter(|e| e.as_ref().unwrap().path().is_file()).count() as i64;
        assert_eq!(done + left, total as i64, "no file lost");
        // What was not taken is untouched: same name, same bytes.
        for e in std::fs::read_dir(&inbox).unwrap() {
            let p = e.unwrap().path();
            if !p.is_file() {
                continue;
            }
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            let i: usize = name[3..6].parse().unwrap();
            assert_eq!(
                std::fs::read(&p).unwrap(),
                variant("fixtures/hl7/pathl7/multi_message.hl7", i),
                "{name} is untouched"
            );
        }
        println!("sigterm mid-load: exit 0, {done} files committed and released, {left} untouched, {files} in OSCAR");
        assert!(files >= done, "every released file was committed first");
        // Nothing half-written: each committed file has all three messages and its routing.
        assert_eq!(count(&store, "SELECT COUNT(*) FROM hl7TextMessage").await, files * 3);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM hl7TextInfo").await, files * 3);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM oscarflow_lab_import").await, files);
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM hl7TextInfo i WHERE NOT EXISTS (SELECT 1 FROM providerLabRouting p WHERE p.lab_no = i.lab_no)").await,
            0
        );
    });
}

#[test]
fn inspect_prints_each_message_and_one_decoded_field_per_message() {
    let o = oscarflow(
        &["inspect", "fixtures/hl7/pathl7/multi_message.hl7", "--json"],
        &repo(),
    );
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let msgs = v["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[0]["control_id"], "ZZ0201");
    assert_eq!(msgs[0]["message_type"], "ORU^R01");
    assert_eq!(msgs[0]["segments"], 8);
    assert_eq!(msgs[0]["lab"]["lab_type"], "PATHL7");
    assert_eq!(msgs[0]["lab"]["typed_by"], "msh3_pathl7");
    // The text names the rule that typed each message; --lab-type reads as configured.
    let t = oscarflow(
        &["inspect", "fixtures/hl7/pathl7/multi_message.hl7"],
        &repo(),
    );
    assert!(
        stdout(&t).contains("lab type PATHL7 (MSH-3 is PATHL7)"),
        "{}",
        stdout(&t)
    );
    let t = oscarflow(
        &[
            "inspect",
            "fixtures/hl7/pathl7/multi_message.hl7",
            "--lab-type",
            "IHA",
        ],
        &repo(),
    );
    assert!(
        stdout(&t).contains("lab type IHAPOI (the pipeline's lab_type)"),
        "{}",
        stdout(&t)
    );
    let f = oscarflow(
        &[
            "inspect",
            "fixtures/bad/mixed_good_bad.hl7",
            "--field",
            "MSH-10",
        ],
        &repo(),
    );
    assert_eq!(
        stdout(&f),
        "ZZ1401\n\nZZ1403\n",
        "one line per message, empty when unreadable"
    );
    let bad = oscarflow(
        &[
            "inspect",
            "fixtures/bad/mixed_good_bad.hl7",
            "--field",
            "PID5",
        ],
        &repo(),
    );
    assert_eq!(bad.status.code(), Some(1));
}

/// `deploy/oscarflow.toml.example` loads, its workers' settings are valid, and the systemd
/// unit starts the daemon on it.
#[test]
fn the_deployment_example_config_loads_and_the_unit_runs_it() {
    let c = oscarflow::config::daemon::DaemonConfig::load(
        &repo().join("deploy/oscarflow.toml.example"),
    )
    .unwrap();
    // Outbound faxes and texts are pipelines: their examples load (with their secrets set).
    for (_, p) in outbound_examples() {
        assert!(!p.sources.is_empty() && !p.sinks.is_empty());
    }
    assert_eq!(c.listen, "127.0.0.1:9464");
    assert_eq!(
        c.database_url_env.as_deref(),
        Some("OSCARFLOW_DATABASE_URL")
    );
    let unit = std::fs::read_to_string(repo().join("deploy/oscarflow.service")).unwrap();
    assert!(unit
        .contains("ExecStart=/usr/local/bin/oscarflow run --config /etc/oscarflow/oscarflow.toml"));
    assert!(unit.contains("KillSignal=SIGTERM"));
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
}

/// `oscarflow <args>` in the repository with `envs` set.
fn oscarflow_with_env(args: &[&str], envs: &[(&str, &str)]) -> Output {
    oscarflow_in(args, &repo(), envs)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// An unsupported scheme fails at once, after the command line has been looked at: these
// tests need no database server.
const URL_WITH_PASSWORD: &str = "postgres://oscar:s3cret-on-cmdline@db.example/oscar";

#[test]
fn a_password_given_with_database_on_the_command_line_is_warned_about_without_showing_it() {
    let o = oscarflow_with_env(&["dlq", "list", "--database", URL_WITH_PASSWORD], &[]);
    let err = stderr(&o);
    assert!(
        err.contains("warning: --database postgres://oscar@…"),
        "{err}"
    );
    assert!(err.contains("--database-env"), "{err}");
    assert!(err.contains("OSCARFLOW_DATABASE_URL"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    assert!(!stdout(&o).contains("s3cret"));

    let o = oscarflow_with_env(
        &["run", "--database", URL_WITH_PASSWORD, "--listen", "off"],
        &[],
    );
    assert!(stderr(&o).contains("warning: --database"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("s3cret"), "{}", stderr(&o));
}

#[test]
fn the_same_url_from_oscarflow_database_url_or_database_env_gives_no_warning() {
    let o = oscarflow_with_env(
        &["dlq", "list"],
        &[("OSCARFLOW_DATABASE_URL", URL_WITH_PASSWORD)],
    );
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
    assert!(stderr(&o).contains("unsupported database url scheme `postgres`"));
    let o = oscarflow_with_env(
        &["dlq", "list", "--database-env", "OSCARFLOW_TEST_CLI_DB_URL"],
        &[("OSCARFLOW_TEST_CLI_DB_URL", URL_WITH_PASSWORD)],
    );
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
    assert!(stderr(&o).contains("unsupported database url scheme `postgres`"));
    assert!(!stderr(&o).contains("s3cret"));
    // A URL without a password (a socket login) on the command line is fine.
    let o = oscarflow_with_env(
        &[
            "dlq",
            "list",
            "--database",
            "postgres://oscar@db.example/oscar",
        ],
        &[],
    );
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
}

#[test]
fn database_env_reads_the_url_from_the_named_variable_and_wins_over_oscarflow_database_url() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("from-env.db");
    let url = format!("sqlite://{}", db.display());
    let o = oscarflow_with_env(
        &["dlq", "list", "--database-env", "OSCARFLOW_TEST_CLI_DB_URL"],
        &[
            ("OSCARFLOW_TEST_CLI_DB_URL", &url),
            ("OSCARFLOW_DATABASE_URL", URL_WITH_PASSWORD),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(db.exists(), "the database of the variable was opened");

    let o = oscarflow_with_env(
        &[
            "dlq",
            "list",
            "--database-env",
            "OSCARFLOW_TEST_CLI_UNSET_VAR",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("environment variable `OSCARFLOW_TEST_CLI_UNSET_VAR` is not set"),
        "{}",
        stderr(&o)
    );
    // A secret pasted where the variable's name belongs is not echoed.
    let o = oscarflow_with_env(&["dlq", "list", "--database-env", URL_WITH_PASSWORD], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!stderr(&o).contains("s3cret"), "{}", stderr(&o));

    let o = oscarflow_with_env(
        &[
            "dlq",
            "list",
            "--database",
            &url,
            "--database-env",
            "OSCARFLOW_TEST_CLI_DB_URL",
        ],
        &[("OSCARFLOW_TEST_CLI_DB_URL", &url)],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("either --database or --database-env"));
}

/// A state directory holding one resolved dead letter (a lab rejected by a pipeline that
/// took only ADT, then re-driven once the pipeline took ORU) and one open one (a file that
/// is not HL7). Returns (resolved id, open id).
fn one_resolved_and_one_open_dead_letter(tmp: &Path, state: &str) -> (String, String) {
    let lab = repo().join("fixtures/hl7/pathl7/matched_chem.hl7");
    let pipeline = |types: &str| {
        format!(
            "[pipeline]\nname = \"strict_lab\"\n[sources.in]\ntype = \"folder\"\npath = \".\"\n[stages.parse]\ntype = \"parse_hl7\"\ninputs = [\"in\"]\nmessage_types = [{types}]\n[stages.match]\ntype = \"match_patient\"\ninputs = [\"parse\"]\n[sinks.oscar]\ntype = \"oscar_lab\"\ninputs = [\"match\"]\n"
        )
    };
    let strict = tmp.join("strict.toml");
    std::fs::write(&strict, pipeline("\"ADT\"")).unwrap();
    let replay = |file: &Path, extra: &[&str]| -> String {
        let o = oscarflow(
            &[
                &[
                    "replay",
                    file.to_str().unwrap(),
                    "--json",
                    "--state-dir",
                    state,
                ],
                extra,
            ]
            .concat(),
            &repo(),
        );
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        r["files"][0]["dead_letter_ids"][0]
            .as_str()
            .unwrap()
            .to_string()
    };
    let resolved = replay(&lab, &["--pipeline", strict.to_str().unwrap()]);
    let dir = tmp.join("pipelines");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("strict.toml"), pipeline("\"ORU\"")).unwrap();
    let retried = oscarflow(
        &[
            "dlq",
            "retry",
            &resolved,
            "--pipelines",
            dir.to_str().unwrap(),
            "--state-dir",
            state,
        ],
        &repo(),
    );
    assert_eq!(retried.status.code(), Some(0), "{}", stdout(&retried));
    let open = replay(&repo().join("fixtures/bad/not_hl7.txt"), &[]);
    (resolved, open)
}

/// Every dead letter's (id, status), whatever its status.
fn dead_letters(state: &str) -> Vec<(String, String)> {
    let o = oscarflow(
        &[
            "dlq",
            "list",
            "--status",
            "all",
            "--json",
            "--state-dir",
            state,
        ],
        &repo(),
    );
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut v: Vec<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn dlq_purge_without_a_filter_removes_only_resolved_dead_letters() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let state_s = state.to_str().unwrap();
    let (resolved, open) = one_resolved_and_one_open_dead_letter(tmp.path(), state_s);
    let mut both = vec![
        (resolved.clone(), "resolved".to_string()),
        (open.clone(), "open".to_string()),
    ];
    both.sort();
    assert_eq!(dead_letters(state_s), both);

    let purge = oscarflow(&["dlq", "purge", "--all", "--state-dir", state_s], &repo());
    assert_eq!(purge.status.code(), Some(0), "{}", stderr(&purge));
    assert!(stdout(&purge).contains("purged 1 "), "{}", stdout(&purge));
    assert_eq!(dead_letters(state_s), vec![(open, "open".to_string())]);
}

#[test]
fn purging_open_dead_letters_needs_yes() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let state_s = state.to_str().unwrap();
    let (resolved, open) = one_resolved_and_one_open_dead_letter(tmp.path(), state_s);
    let before = dead_letters(state_s);
    assert_eq!(before.len(), 2);

    // Asking for open (or all) ones without --yes deletes nothing and says how many and how.
    for status in ["open", "all"] {
        let o = oscarflow(
            &[
                "dlq",
                "purge",
                "--all",
                "--status",
                status,
                "--state-dir",
                state_s,
            ],
            &repo(),
        );
        assert_eq!(o.status.code(), Some(1), "{status}");
        let err = stderr(&o);
        assert!(err.contains("1 open dead letter"), "{err}");
        assert!(err.contains("--yes"), "{err}");
        assert!(!stdout(&o).contains("purged"), "{}", stdout(&o));
        assert_eq!(dead_letters(state_s), before, "{status}: nothing deleted");
    }
    // By id, an open one is refused too; a resolved one is not.
    let o = oscarflow(&["dlq", "purge", &open, "--state-dir", state_s], &repo());
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--yes"), "{}", stderr(&o));
    assert_eq!(dead_letters(state_s), before);

    // With --yes the open one goes, and only it.
    let o = oscarflow(
        &[
            "dlq",
            "purge",
            "--all",
            "--status",
            "open",
            "--yes",
            "--state-dir",
            state_s,
        ],
        &repo(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("purged 1 "), "{}", stdout(&o));
    assert_eq!(
        dead_letters(state_s),
        vec![(resolved, "resolved".to_string())]
    );
}

#[test]
fn replay_seed_twice_succeeds_and_seeds_once() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().to_str().unwrap();
    let replay = |lab: &str| {
        oscarflow(
            &[
                "replay",
                lab,
                "--json",
                "--seed",
                "fixtures/sql/bc_clinic.sql",
                "--state-dir",
                state,
            ],
            &repo(),
        )
    };
    let counts = || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = sqlite_store(tmp.path()).await;
            let mut v = Vec::new();
            for table in [
                "demographic",
                "demographic_merged",
                "provider",
                "incomingLabRules",
            ] {
                v.push(count(&store, &format!("SELECT COUNT(*) FROM {table}")).await);
            }
            store.pool.close().await;
            v
        })
    };
    let first = replay("fixtures/hl7/pathl7/matched_chem.hl7");
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let r: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(r["totals"]["matched"], 1, "the seeded chart is there");
    let seeded = counts();
    // What the seed file inserts: 13 charts, 2 merge rows, 6 providers, 1 forwarding rule.
    assert_eq!(seeded, vec![13, 2, 6, 1]);

    // The same seed again (with another lab) is skipped, not an error, and adds nothing.
    let second = replay("fixtures/hl7/pathl7/multi_message.hl7");
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("already run"),
        "{}",
        stderr(&second)
    );
    let r: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert!(r["totals"]["imported"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(counts(), seeded);
}

/// The example `pipelines/<name>.toml.example` as the operator installs it (renamed to
/// `<name>.toml`), its RingCentral account pointed at `emu` (loopback) and its polls
/// shortened; `enabled` is left as shipped.
fn installed_example(name: &str, emu: &common::rc_emulator::RcEmulator, docs: &Path) -> String {
    let shipped =
        std::fs::read_to_string(repo().join(format!("pipelines/{name}.toml.example"))).unwrap();
    let account = "client_id_env = \"RINGCENTRAL_CLIENT_ID\"\nclient_secret_env = \"RINGCENTRAL_CLIENT_SECRET\"\njwt_env = \"RINGCENTRAL_JWT\"\n";
    assert!(shipped.contains(account), "{name}: its account settings");
    shipped
        .replace(account, &emu.ringcentral_toml("DEPLOY", (100_000, "1m")))
        .replace(
            "document_dir = \"/var/lib/OscarDocument/oscar/document\"",
            &format!("document_dir = \"{}\"", docs.display()),
        )
        .replace("poll_interval = \"30s\"", "poll_interval = \"100ms\"")
        .replace("poll_interval = \"1m\"", "poll_interval = \"100ms\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployment_example_sends_no_text_or_fax_until_turned_on() {
    use common::rc_emulator::RcEmulator;
    for (name, p) in outbound_examples() {
        assert!(!p.settings.enabled, "{name} ships switched off");
    }
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let docs = tmp.path().join("document");
    std::fs::create_dir_all(&state).unwrap();
    // A clinic with appointments tomorrow and two faxes waiting on the example's line.
    let store = seeded_store(&state).await;
    common::texts::seed_appointments(&store).await;
    common::fax_queue::queue_faxes(&store, &docs, 2).await;
    let emu = RcEmulator::start().await;
    emu.lift_limits();

    let pipelines = tmp.path().join("pipelines");
    let inbox = tmp.path().join("inbox");
    std::fs::create_dir_all(&pipelines).unwrap();
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(
        pipelines.join("labs.toml"),
        format!(
            "[pipeline]\nname = \"labs\"\n[sources.inbox]\ntype = \"folder\"\npath = \"{}\"\n[stages.parse]\ntype = \"parse_hl7\"\ninputs = [\"inbox\"]\n[sinks.oscar]\ntype = \"oscar_lab\"\ninputs = [\"parse\"]\n",
            inbox.display()
        ),
    )
    .unwrap();
    let fax_out = installed_example("fax_out", &emu, &docs);
    std::fs::write(pipelines.join("fax_out.toml"), &fax_out).unwrap();
    std::fs::write(
        pipelines.join("texts.toml"),
        installed_example("texts", &emu, &docs),
    )
    .unwrap();

    let port = free_port();
    let mut daemon = Command::new(bin())
        .args([
            "run",
            "--pipelines",
            pipelines.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .current_dir(tmp.path())
        .env_remove("OSCARFLOW_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let listing = || -> Option<serde_json::Value> {
        let (status, body) = http_request("GET", port, "/pipelines", None)?;
        (status == 200).then(|| serde_json::from_str(&body).unwrap())
    };
    let started = Instant::now();
    let shown = loop {
        if let Some(v) =
            listing().filter(|v| v["disabled"].as_array().is_some_and(|d| d.len() == 2))
        {
            break v;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no /pipelines");
        assert!(daemon.try_wait().unwrap().is_none(), "the daemon exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let names = |key: &str| -> Vec<String> {
        let mut v: Vec<String> = shown[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("pipelines"), vec!["labs"], "{shown}");
    assert_eq!(names("disabled"), vec!["fax_out", "texts"], "{shown}");
    // Nothing was claimed, queued or sent.
    assert_eq!(
        common::fax_queue::statuses(&store).await,
        [("WAITING".to_string(), 2)].into_iter().collect()
    );
    assert!(common::texts::states(&store).await.is_empty());
    {
        let s = emu.state.lock().unwrap();
        assert!(s.sent.is_empty() && s.sms.is_empty());
    }

    // Turned on as its comment says, the fax line sends its queue.
    let on = fax_out.replace("enabled = false", "enabled = true");
    assert_ne!(on, fax_out);
    std::fs::write(pipelines.join("fax_out.toml"), on).unwrap();
    let started = Instant::now();
    while emu.state.lock().unwrap().sent.len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the switched-on fax line sent nothing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let status = daemon.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(daemon.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    store.pool.close().await;
}

#[test]
fn dlq_times_show_their_utc_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().to_str().unwrap();
    // A clinic eight hours behind UTC (a fixed zone: no tz database needed).
    let zone = [("TZ", "XST8")];
    let before = time::OffsetDateTime::now_utc().unix_timestamp();
    let o = oscarflow_with_env(
        &[
            "replay",
            "fixtures/bad/not_hl7.txt",
            "--json",
            "--state-dir",
            state,
        ],
        &zone,
    );
    let after = time::OffsetDateTime::now_utc().unix_timestamp();
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = r["files"][0]["dead_letter_ids"][0]
        .as_str()
        .unwrap()
        .to_string();

    let o = oscarflow_with_env(&["dlq", "list", "--json", "--state-dir", state], &zone);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in ["received_at", "first_failed_at", "last_failed_at"] {
        let shown = rows[0][key].as_str().unwrap();
        assert!(shown.ends_with("-08:00"), "{key}: {shown}");
        // The time with its offset is the moment it happened.
        let t = time::OffsetDateTime::parse(shown, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{key}: {shown}: {e}"))
            .unix_timestamp();
        assert!(before - 1 <= t && t <= after + 1, "{key}: {shown}");
    }
    let o = oscarflow_with_env(&["dlq", "show", &id, "--state-dir", state], &zone);
    let out = stdout(&o);
    for label in ["received ", "failed "] {
        let line = out
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(line.contains("-08:00"), "{line}");
    }
    let o = oscarflow_with_env(&["dlq", "list", "--state-dir", state], &zone);
    let row = stdout(&o)
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap()
        .to_string();
    assert!(row.trim_end().ends_with("-08:00"), "{row}");
}

/// `oscarflow replay DIR` run on a pseudo-terminal (stdout and stderr both on it), as an
/// operator types it; `rust_log` set or not. The terminal's text, or None without `script`.
fn replay_on_a_terminal(dir: &Path, state: &Path, rust_log: Option<&str>) -> Option<String> {
    let line = format!(
        "{} replay {} --state-dir {}",
        bin().display(),
        dir.display(),
        state.display()
    );
    let mut c = Command::new("script");
    c.args(["-qec", &line, "/dev/null"])
        .current_dir(repo())
        .env_remove("OSCARFLOW_DATABASE_URL")
        .env_remove("RUST_LOG")
        .env("TERM", "xterm");
    if let Some(l) = rust_log {
        c.env("RUST_LOG", l);
    }
    let o = c.output().ok()?;
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{text}{}", stderr(&o));
    Some(text)
}

#[test]
fn replay_on_a_terminal_prints_no_line_per_message_over_its_progress_bar() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("labs");
    std::fs::create_dir_all(&dir).unwrap();
    // Enough files for the progress bar.
    for i in 0..25 {
        std::fs::write(
            dir.join(format!("lab{i:02}.hl7")),
            variant("fixtures/hl7/pathl7/matched_chem.hl7", i),
        )
        .unwrap();
    }
    let Some(quiet) = replay_on_a_terminal(&dir, &tmp.path().join("a"), None) else {
        eprintln!("no `script` on this machine: nothing to run the replay on a terminal with");
        return;
    };
    assert!(quiet.contains("total (25 files)"), "{quiet}");
    assert!(!quiet.contains("Imported into OSCAR"), "{quiet}");
    // The same replay asked for info lines shows them: the terminal would carry them.
    let loud = replay_on_a_terminal(&dir, &tmp.path().join("b"), Some("info")).unwrap();
    assert!(loud.contains("total (25 files)"), "{loud}");
    assert!(loud.contains("Imported into OSCAR"), "{loud}");
}
