//! `gyre-bench distortion`: how far TurboQuant's reconstructions and inner-product estimates are
//! from the truth, on random unit vectors, beside the paper's numbers.

use std::time::Instant;

use gyre::random::SeededRng;
use gyre::{Estimator, Quantizer, QuantizerConfig, RotationKind, Variant};
use rayon::prelude::*;
use serde::Serialize;

/// Gaussian-limit D_mse for b = 1..4 (TurboQuant paper; TURBOQUANT.md §1).
const PAPER_D_MSE: [f64; 4] = [0.3634, 0.1175, 0.03455, 0.00950];
/// The paper's D_prod · d for b = 1..4.
const PAPER_D_PROD_TIMES_D: [f64; 4] = [1.57, 0.56, 0.18, 0.047];

#[derive(clap::Args)]
pub struct Args {
    /// Vector dimension.
    #[arg(long, default_value_t = 1536)]
    dim: usize,
    /// Comma-separated bit widths to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4")]
    bits: Vec<u8>,
    /// mse (all bits to the scalar quantizer) or prod (b-1 bits + a 1-bit QJL sketch).
    #[arg(long, default_value = "mse")]
    variant: Variant,
    /// hadamard (default, O(d log d)) or dense (Haar, O(d²)).
    #[arg(long, default_value = "hadamard")]
    rotation: RotationKind,
    /// Number of random unit vectors (and of random unit queries).
    #[arg(long, default_value_t = 20_000)]
    vectors: usize,
    /// Seed of the quantizer and of the data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Correlation of each query with its vector (0: independent random queries, as in the
    /// paper; larger values make a multiplicative bias visible in `ip_bias` too).
    #[arg(long, default_value_t = 0.0)]
    correlation: f64,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    dim: usize,
    bits: u8,
    variant: &'static str,
    rotation: &'static str,
    vectors: usize,
    seed: u64,
    correlation: f64,
    /// Measured `E||u - û||²`.
    d_mse: f64,
    /// The prediction of the exact-law codebook for the scalar part.
    d_mse_codebook: Option<f64>,
    /// The paper's Gaussian-limit value (b ≤ 4, mse variant).
    d_mse_paper: Option<f64>,
    /// The estimator used for `ip_*`: "renormalized" (mse) or "qjl" (prod).
    estimator: &'static str,
    ip_bias: f64,
    ip_bias_stderr: f64,
    ip_var: f64,
    /// Least-squares slope of estimate on truth: 1 for an unbiased estimator.
    ip_slope: f64,
    /// (π/2)·D_mse(b-1)/d for prod: the QJL variance for a residual of that size.
    ip_var_theory: Option<f64>,
    /// The paper's D_prod (prod variant, b ≤ 4).
    ip_var_paper: Option<f64>,
    /// The same for the plain (not renormalised) mse estimator.
    ip_bias_plain: Option<f64>,
    ip_bias_plain_stderr: Option<f64>,
    ip_var_plain: Option<f64>,
    ip_slope_plain: Option<f64>,
    encode_seconds: f64,
}

/// `n` seeded random unit vectors, row-major.
pub fn unit_rows(seed: u64, n: usize, dim: usize) -> Vec<f32> {
    let mut rng = SeededRng::for_data(seed);
    let mut rows = vec![0.0f32; n * dim];
    for row in rows.chunks_exact_mut(dim) {
        rng.unit_vector(row);
    }
    rows
}

/// Streaming sums of an estimator's errors.
#[derive(Default, Clone, Copy)]
struct ErrorStats {
    n: f64,
    sum: f64,
    sum_sq: f64,
    est_truth: f64,
    truth_sq: f64,
}

impl ErrorStats {
    fn add(&mut self, est: f64, truth: f64) {
        let e = est - truth;
        self.n += 1.0;
        self.sum += e;
        self.sum_sq += e * e;
        self.est_truth += est * truth;
        self.truth_sq += truth * truth;
    }
    fn merge(mut self, o: Self) -> Self {
        self.n += o.n;
        self.sum += o.sum;
        self.sum_sq += o.sum_sq;
        self.est_truth += o.est_truth;
        self.truth_sq += o.truth_sq;
        self
    }
    fn bias(&self) -> f64 {
        self.sum / self.n
    }
    fn var(&self) -> f64 {
        (self.sum_sq / self.n - self.bias().powi(2)) * self.n / (self.n - 1.0).max(1.0)
    }
    fn stderr(&self) -> f64 {
        (self.var() / self.n).sqrt()
    }
    fn slope(&self) -> f64 {
        self.est_truth / self.truth_sq
    }
}

#[derive(Default, Clone, Copy)]
struct Totals {
    sq_err: f64,
    main: ErrorStats,
    plain: ErrorStats,
}

pub fn run(args: &Args) -> Result<(), gyre::Error> {
    let d = args.dim;
    if args.vectors == 0 {
        return Err(gyre::Error::InvalidArgument {
            name: "vectors",
            reason: "need at least one vector".into(),
        });
    }
    if !(0.0..1.0).contains(&args.correlation) {
        return Err(gyre::Error::InvalidArgument {
            name: "correlation",
            reason: "must be in [0, 1)".into(),
        });
    }
    // Validate every configuration before spending time on data.
    let quantizers = args
        .bits
        .iter()
        .map(|&bits| {
            Quantizer::new(QuantizerConfig {
                dim: d,
                bits,
                variant: args.variant,
                rotation: args.rotation,
                seed: args.seed,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !args.json {
        eprintln!("generating {} vectors and queries at d = {d}", args.vectors);
    }
    let data = unit_rows(args.seed, args.vectors, d);
    let mut queries = unit_rows(args.seed ^ 0x5155_4552_5953, args.vectors, d);
    if args.correlation > 0.0 {
        let (a, b) = (
            args.correlation as f32,
            (1.0 - args.correlation.powi(2)).sqrt() as f32,
        );
        for (q, u) in queries.chunks_exact_mut(d).zip(data.chunks_exact(d)) {
            for (qj, &uj) in q.iter_mut().zip(u) {
                *qj = a * uj + b * *qj;
            }
        }
    }
    if !args.json {
        println!(
            "TurboQuant_{} distortion, d = {d}, {} rotation, {} vectors, seed {}",
            args.variant.name(),
            args.rotation.name(),
            args.vectors,
            args.seed
        );
        if args.variant == Variant::Mse {
            println!(
                "{:>4} {:>9} {:>9} {:>9} | {:>10} {:>8} {:>9} {:>7} | {:>10} {:>9} {:>7}",
                "bits",
                "D_mse",
                "codebook",
                "paper",
                "ip_bias",
                "stderr",
                "ip_var·d",
                "slope",
                "plain_bias",
                "var·d",
                "slope"
            );
            println!(
                "{:>34} | {:^37} | {:^29}",
                "", "renormalised (default)", "plain (paper's decoder)"
            );
        } else {
            println!(
                "{:>4} {:>9} {:>9} | {:>10} {:>8} {:>9} {:>9} {:>9} {:>7}",
                "bits",
                "D_mse",
                "mse(b-1)",
                "ip_bias",
                "stderr",
                "ip_var·d",
                "theory·d",
                "paper·d",
                "slope"
            );
        }
    }
    for q in &quantizers {
        let started = Instant::now();
        let batch = data
            .par_chunks(d * 256)
            .map(|chunk| q.encode_batch(chunk))
            .collect::<Result<Vec<_>, _>>()?;
        let encode_seconds = started.elapsed().as_secs_f64();
        let totals = batch
            .par_iter()
            .enumerate()
            .map(|(c, part)| {
                let mut t = Totals::default();
                let mut decoded = vec![0.0f32; d];
                for i in 0..part.len() {
                    let row = c * 256 + i;
                    let u = &data[row * d..(row + 1) * d];
                    let query = &queries[row * d..(row + 1) * d];
                    let code = part.get(i);
                    q.decode(code, &mut decoded)?;
                    t.sq_err += u
                        .iter()
                        .zip(&decoded)
                        .map(|(a, b)| f64::from(a - b).powi(2))
                        .sum::<f64>();
                    let truth: f64 = u
                        .iter()
                        .zip(query)
                        .map(|(a, b)| f64::from(*a) * f64::from(*b))
                        .sum();
                    let lut = q.prepare_query(query)?;
                    t.main.add(
                        f64::from(lut.inner_product(code, Estimator::Renormalized)),
                        truth,
                    );
                    t.plain
                        .add(f64::from(lut.inner_product(code, Estimator::Plain)), truth);
                }
                Ok(t)
            })
            .try_reduce(Totals::default, |a, b| {
                Ok(Totals {
                    sq_err: a.sq_err + b.sq_err,
                    main: a.main.merge(b.main),
                    plain: a.plain.merge(b.plain),
                })
            })?;
        let bits = q.config().bits;
        let mse = args.variant == Variant::Mse;
        let codebook_mse = q.codebook().map(|c| c.expected_mse());
        let paper_index = usize::from(bits) - 1;
        let row = Row {
            dim: d,
            bits,
            variant: args.variant.name(),
            rotation: args.rotation.name(),
            vectors: args.vectors,
            seed: args.seed,
            correlation: args.correlation,
            d_mse: totals.sq_err / args.vectors as f64,
            d_mse_codebook: codebook_mse,
            d_mse_paper: if mse {
                PAPER_D_MSE.get(paper_index).copied()
            } else {
                None
            },
            estimator: if mse { "renormalized" } else { "qjl" },
            ip_bias: totals.main.bias(),
            ip_bias_stderr: totals.main.stderr(),
            ip_var: totals.main.var(),
            ip_slope: totals.main.slope(),
            ip_var_theory: if mse {
                None
            } else {
                Some(std::f64::consts::FRAC_PI_2 * codebook_mse.unwrap_or(1.0) / d as f64)
            },
            ip_var_paper: if mse {
                None
            } else {
                PAPER_D_PROD_TIMES_D.get(paper_index).map(|v| v / d as f64)
            },
            ip_bias_plain: mse.then(|| totals.plain.bias()),
            ip_bias_plain_stderr: mse.then(|| totals.plain.stderr()),
            ip_var_plain: mse.then(|| totals.plain.var()),
            ip_slope_plain: mse.then(|| totals.plain.slope()),
            encode_seconds,
        };
        if args.json {
            println!("{}", serde_json::to_string(&row).expect("rows serialise"));
        } else {
            let opt = |v: Option<f64>, scale: f64| {
                v.map_or("-".to_string(), |v| format!("{:.5}", v * scale))
            };
            let dd = d as f64;
            if mse {
                println!(
                    "{:>4} {:>9.5} {:>9} {:>9} | {:>10.2e} {:>8.1e} {:>9.5} {:>7.4} | {:>10.2e} {:>9.5} {:>7.4}",
                    row.bits,
                    row.d_mse,
                    opt(row.d_mse_codebook, 1.0),
                    opt(row.d_mse_paper, 1.0),
                    row.ip_bias,
                    row.ip_bias_stderr,
                    row.ip_var * dd,
                    row.ip_slope,
                    row.ip_bias_plain.unwrap_or(f64::NAN),
                    row.ip_var_plain.unwrap_or(f64::NAN) * dd,
                    row.ip_slope_plain.unwrap_or(f64::NAN),
                );
            } else {
                println!(
                    "{:>4} {:>9.5} {:>9} | {:>10.2e} {:>8.1e} {:>9.5} {:>9} {:>9} {:>7.4}",
                    row.bits,
                    row.d_mse,
                    opt(row.d_mse_codebook, 1.0),
                    row.ip_bias,
                    row.ip_bias_stderr,
                    row.ip_var * dd,
                    opt(row.ip_var_theory, dd),
                    opt(row.ip_var_paper, dd),
                    row.ip_slope,
                );
            }
        }
    }
    Ok(())
}
