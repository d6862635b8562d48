//! `gyre`: Gyre's server and data-directory tool.
//!
//! The gRPC service (`gyre serve`) and the operations on a data directory are not built yet;
//! this binary says so instead of pretending. The engine is usable today as the `gyre` library,
//! and `gyre-bench` measures it.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version" | "-V") => {
            println!("gyre {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        None | Some("--help" | "-h" | "help") => {
            println!(
                "gyre {}: approximate-nearest-neighbour search over TurboQuant codes\n\n\
                 The server (`gyre serve`) is not built yet. Today Gyre is an embeddable library\n\
                 (crate `gyre`) and a measuring tool: `cargo run --release -p gyre-bench -- --help`.",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!(
                "gyre: `{other}` is not available yet: this build has no server or data-directory commands (see README.md)"
            );
            ExitCode::from(2)
        }
    }
}
