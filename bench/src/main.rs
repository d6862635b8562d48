//! `gyre-bench`: Gyre's measuring tools.
//!
//! * `distortion`: TurboQuant's distortion and inner-product error on random unit vectors,
//!   beside the paper's figures.
//! * `fingerprint`: a checksum of the codes a configuration produces, to compare encoders across
//!   processes, builds and machines.
//! * `recall`: the ann-benchmarks-style recall runner; `plot` charts result CSVs together.
//! * `ingest`: durable ingest, open time, memory; `churn`: a steady upsert-and-delete load
//!   (deleted rows, disk, write amplification of the merge policy); `grpc-load`: a server.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod churn;
mod common;
mod distortion;
mod filtered;
mod grpc;
mod ingest;
mod recall;
mod report;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gyre::{Quantizer, QuantizerConfig, RotationKind, Variant};

#[derive(Parser)]
#[command(name = "gyre-bench", version, about = "Gyre's measuring tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure D_mse and inner-product bias/variance of TurboQuant on random unit vectors.
    Distortion(distortion::Args),
    /// Print a checksum of the codes for a configuration and seeded random vectors.
    Fingerprint(FingerprintArgs),
    /// Recall vs QPS on an ann-benchmarks dataset (ann-benchmarks' recall definition).
    Recall(Box<recall::Args>),
    /// Chart several result CSVs (Gyre's and the baselines') together.
    Plot(recall::PlotArgs),
    /// Durable ingest into an on-disk collection; open time, first query, memory.
    Ingest(Box<ingest::Args>),
    /// Concurrent single searches against a running server: throughput and latency.
    GrpcLoad(grpc::LoadArgs),
    /// Over gRPC: UpsertStream ingest rate, small-upsert latency, single-search latency alone
    /// and under concurrent clients.
    GrpcLatency(grpc::LatencyArgs),
    /// Steady upsert-and-delete load: deleted rows, disk, memory, write amplification.
    Churn(churn::ChurnArgs),
}

#[derive(clap::Args)]
struct FingerprintArgs {
    /// Vector dimension.
    #[arg(long, default_value_t = 384)]
    dim: usize,
    /// Bits per coordinate.
    #[arg(long, default_value_t = 4)]
    bits: u8,
    /// Estimator family: mse or prod.
    #[arg(long, default_value = "mse")]
    variant: Variant,
    /// Rotation: hadamard or dense.
    #[arg(long, default_value = "hadamard")]
    rotation: RotationKind,
    /// Seed of the quantizer (the data uses seed + 1).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of random vectors to encode.
    #[arg(long, default_value_t = 1000)]
    vectors: usize,
}

fn fingerprint(args: &FingerprintArgs) -> Result<(), gyre::Error> {
    let q = Quantizer::new(QuantizerConfig {
        dim: args.dim,
        bits: args.bits,
        variant: args.variant,
        rotation: args.rotation,
        seed: args.seed,
    })?;
    let rows = distortion::unit_rows(args.seed.wrapping_add(1), args.vectors, args.dim);
    let batch = q.encode_batch(&rows)?;
    let mut crc = crc32c::crc32c(batch.codes());
    crc = crc32c::crc32c_append(crc, batch.sketches());
    for s in batch.scalars() {
        for v in [s.norm, s.scale, s.residual_norm] {
            crc = crc32c::crc32c_append(crc, &v.to_le_bytes());
        }
    }
    println!(
        "dim={} bits={} variant={} rotation={} seed={} vectors={} crc32c={crc:08x}",
        args.dim,
        args.bits,
        args.variant.name(),
        args.rotation.name(),
        args.seed,
        args.vectors
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Distortion(args) => distortion::run(args).map_err(|e| e.to_string()),
        Command::Fingerprint(args) => fingerprint(args).map_err(|e| e.to_string()),
        Command::Recall(args) => recall::run(args),
        Command::Plot(args) => recall::plot(args),
        Command::Ingest(args) => ingest::run(args),
        Command::GrpcLoad(args) => grpc::load_test(args),
        Command::GrpcLatency(args) => grpc::latency(args),
        Command::Churn(args) => churn::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gyre-bench: {e}");
            ExitCode::from(2)
        }
    }
}
