//! `gyre-datasets`: inspect and generate benchmark datasets.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use gyre_datasets::{Matrix, Result, VectorFormat, bigann, npy, read_vectors, texmex};

fn usage() -> &'static str {
    "usage:\n  gyre-datasets info FILE\n      shape and crc32c checksum of a .fvecs/.bvecs/.ivecs/.fbin/.u8bin/.i8bin/.ibin/.npy file\n  gyre-datasets random --dim D --count N [--seed S] OUT\n      N seeded random unit vectors (OUT's extension picks .fvecs, .fbin or .npy)"
}

fn info(path: PathBuf) -> Result<()> {
    let format = VectorFormat::from_path(&path)?;
    let m = read_vectors(&path)?;
    let mut crc = 0u32;
    for v in m.as_slice() {
        crc = crc32c::crc32c_append(crc, &v.to_le_bytes());
    }
    println!("file:     {}", path.display());
    println!("format:   {format:?}");
    println!("shape:    {} × {}", m.rows(), m.dim());
    println!("metric:   not stored in this format");
    println!("checksum: crc32c {crc:08x} (of the f32 values, little-endian)");
    Ok(())
}

fn random(dim: usize, count: usize, seed: u64, out: PathBuf) -> Result<()> {
    let mut rng = gyre::random::SeededRng::for_data(seed);
    let mut data = vec![0.0f32; dim * count];
    for row in data.chunks_exact_mut(dim) {
        rng.unit_vector(row);
    }
    let m = Matrix::new(count, dim, data);
    match VectorFormat::from_path(&out)? {
        VectorFormat::Fvecs => texmex::write_fvecs(&out, &m)?,
        VectorFormat::Fbin => bigann::write_fbin(&out, &m)?,
        VectorFormat::Npy => npy::write_npy_f32(&out, &m)?,
        other => {
            eprintln!(
                "gyre-datasets: random vectors are written as .fvecs, .fbin or .npy, not {other:?}"
            );
            return Ok(());
        }
    }
    eprintln!(
        "wrote {count} random unit vectors of dimension {dim} (seed {seed}) to {}",
        out.display()
    );
    Ok(())
}

fn parse(args: &[String]) -> std::result::Result<Command, String> {
    match args.first().map(String::as_str) {
        Some("info") => match &args[1..] {
            [file] => Ok(Command::Info(file.into())),
            _ => Err("info takes one FILE".into()),
        },
        Some("random") => {
            let (mut dim, mut count, mut seed, mut out) = (None, None, 0u64, None);
            let mut it = args[1..].iter();
            while let Some(a) = it.next() {
                let mut value = |name: &str| {
                    it.next()
                        .cloned()
                        .ok_or_else(|| format!("{name} needs a value"))
                };
                match a.as_str() {
                    "--dim" => {
                        dim = Some(value("--dim")?.parse().map_err(|e| format!("--dim: {e}"))?)
                    }
                    "--count" => {
                        count = Some(
                            value("--count")?
                                .parse()
                                .map_err(|e| format!("--count: {e}"))?,
                        )
                    }
                    "--seed" => {
                        seed = value("--seed")?
                            .parse()
                            .map_err(|e| format!("--seed: {e}"))?
                    }
                    s if s.starts_with("--") => return Err(format!("unknown option {s}")),
                    s => out = Some(PathBuf::from(s)),
                }
            }
            match (dim, count, out) {
                (Some(d), Some(n), Some(o)) if d > 0 => Ok(Command::Random(d, n, seed, o)),
                (Some(0), ..) => Err("--dim must be positive".into()),
                _ => Err("random needs --dim, --count and OUT".into()),
            }
        }
        _ => Err("unknown command".into()),
    }
}

enum Command {
    Info(PathBuf),
    Random(usize, usize, u64, PathBuf),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args[0] == "--help" || args[0] == "-h" {
        println!("{}", usage());
        return ExitCode::SUCCESS;
    }
    let result = match parse(&args) {
        Ok(Command::Info(p)) => info(p),
        Ok(Command::Random(d, n, s, o)) => random(d, n, s, o),
        Err(e) => {
            eprintln!("gyre-datasets: {e}\n{}", usage());
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gyre-datasets: {e}");
            ExitCode::FAILURE
        }
    }
}
