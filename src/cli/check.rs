//! `oscarflow check PATH...`: parse + validate pipeline files, no I/O besides reading them.

use std::path::PathBuf;

/// Arguments of `check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Pipeline files or directories (their *.toml files).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

pub fn run(a: CheckArgs) -> i32 {
    let (ok, diags) = crate::config::load_all(&a.paths);
    for d in &diags {
        println!("{d}");
    }
    if diags.is_empty() {
        println!("{} pipeline file(s) OK", ok.len());
        0
    } else {
        println!("{} problem(s) found", diags.len());
        1
    }
}
