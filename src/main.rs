//! The `oscarflow` binary: a thin shell around [`oscarflow::cli::main`].

fn main() {
    std::process::exit(oscarflow::cli::main());
}
