//! `gyre`: Gyre's gRPC server and data-directory tool.
//!
//! `gyre serve` runs the service; `import`, `search`, `info`, `verify`, `compact`,
//! `snapshot` and `backup` work on a data directory directly (no server; the directory must not be open in
//! a running server).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod auth;
mod convert;
mod edge;
mod errors;
mod metrics;
mod ops;
mod replicate;
mod serve;
mod service;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "gyre",
    version,
    about = "Gyre: approximate-nearest-neighbour search over TurboQuant codes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC server (health, reflection, metrics; Ctrl-C or SIGTERM to stop cleanly).
    Serve(Box<serve::ServeArgs>),
    /// Load vectors from a file (HDF5, fvecs, fbin, npy, ...) into a collection.
    Import(ops::ImportArgs),
    /// Search a collection with one vector.
    Search(ops::SearchArgs),
    /// Show collections: configuration, counts, segments, bytes.
    Info(ops::InfoArgs),
    /// Check every segment's checksums.
    Verify(ops::DirArgs),
    /// Merge segments and drop deleted rows.
    Compact(ops::CompactArgs),
    /// Snapshots: create, list, restore, delete.
    Snapshot(ops::SnapshotArgs),
    /// Backups in an object store: create, list, restore (also onto a new machine).
    Backup(ops::BackupArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Serve(args) => args.resolve().and_then(|settings| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(serve::run(settings))
        }),
        Command::Import(a) => ops::import(&a),
        Command::Search(a) => ops::search(&a),
        Command::Info(a) => ops::info(&a),
        Command::Verify(a) => ops::verify(&a),
        Command::Compact(a) => ops::compact(&a),
        Command::Snapshot(a) => ops::snapshot(&a),
        Command::Backup(a) => ops::backup(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gyre: {e}");
            ExitCode::FAILURE
        }
    }
}
