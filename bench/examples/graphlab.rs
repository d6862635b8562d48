//! Graph quality lab: builds `gyre::graph` over a dataset's (normalised) vectors and walks it
//! with exact distances, so the graph is judged apart from the codes.
//! `cargo run --release -p gyre-bench --example graphlab -- FILE DEGREE BUILD_EF ALPHA [EF,...]`
#![allow(clippy::print_stdout, clippy::print_stderr)] // a lab: its output is the point

use std::time::Instant;

use gyre::graph::search::{Scorer, Scratch, search};
use gyre::graph::{BuildParams, NONE};

struct Exact<'a> {
    x: &'a [f32],
    d: usize,
    q: &'a [f32],
}
impl Scorer for Exact<'_> {
    fn prefetch(&self, _row: u32) {}
    fn score(&self, row: u32) -> f32 {
        -gyre::kernels::squared_l2_wide(self.q, &self.x[row as usize * self.d..][..self.d])
    }
}
fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 5 {
        eprintln!("usage: graphlab FILE DEGREE BUILD_EF ALPHA [EF,...]");
        std::process::exit(2);
    }
    let ds = gyre_datasets::annb::read_hdf5(std::path::Path::new(&a[1])).unwrap();
    let degree: usize = a[2].parse().unwrap();
    let build_ef: usize = a[3].parse().unwrap();
    let alpha: f32 = a[4].parse().unwrap();
    let efs: Vec<usize> = a
        .get(5)
        .map(|s| s.split(',').map(|v| v.parse().unwrap()).collect())
        .unwrap_or(vec![32, 64, 128, 256]);
    let d = ds.train.dim();
    let norm = |v: &[f32]| {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-30);
        v.iter().map(|x| x / n).collect::<Vec<f32>>()
    };
    let x: Vec<f32> = ds.train.as_slice().chunks(d).flat_map(norm).collect();
    let n = x.len() / d;
    let p = BuildParams {
        degree,
        build_ef,
        alpha,
        entries: std::env::var("ENTRIES").map_or(16, |v| v.parse().unwrap()),
        ..BuildParams::default()
    };
    let t = Instant::now();
    let g = gyre::graph::build::build(&x, d, &p, &|_| {});
    let build_s = t.elapsed().as_secs_f64();
    let lists: Vec<Vec<u32>> = g
        .adjacency
        .chunks(degree)
        .map(|l| l.iter().copied().filter(|&v| v != NONE).collect())
        .collect();
    let mut indeg = vec![0u32; n];
    for l in &lists {
        for &v in l {
            indeg[v as usize] += 1;
        }
    }
    let zero = indeg.iter().filter(|&&c| c == 0).count();
    let low = indeg.iter().filter(|&&c| c <= 2).count();
    let avg_out = lists.iter().map(|l| l.len()).sum::<usize>() as f64 / n as f64;
    println!(
        "n={n} d={d} R={degree} bef={build_ef} a={alpha} build {build_s:.1}s avg out {avg_out:.1} indeg0 {zero} indeg<=2 {low}"
    );
    let qs: Vec<Vec<f32>> = ds.test.as_slice().chunks(d).map(norm).collect();
    let k = 10;
    let mut s = Scratch::default();
    let mut out = Vec::new();
    for &ef in &efs {
        let t = Instant::now();
        let mut hit = 0usize;
        let mut scored = 0usize;
        let mut missed_zero = 0usize;
        for (qi, q) in qs.iter().enumerate() {
            let sc = Exact { x: &x, d, q };
            search(&lists[..], n, &g.entries, &sc, ef, |_| true, &mut s);
            scored += s.scored;
            s.results(&mut out);
            let truth: Vec<u32> = ds.neighbors.row(qi)[..k]
                .iter()
                .map(|&v| v as u32)
                .collect();
            let got: Vec<u32> = out.iter().take(k).map(|r| r.0).collect();
            for t in &truth {
                if got.contains(t) {
                    hit += 1;
                } else if indeg[*t as usize] == 0 {
                    missed_zero += 1;
                }
            }
        }
        let el = t.elapsed().as_secs_f64();
        println!(
            "ef {ef:4} recall {:.4} scored/q {:.0} qps {:.0} missed-with-indeg0 {missed_zero}",
            hit as f64 / (qs.len() * k) as f64,
            scored as f64 / qs.len() as f64,
            qs.len() as f64 / el
        );
    }
}
