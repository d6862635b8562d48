//! Encode throughput on one thread: vectors/s for the Hadamard rotation at embedding sizes.
//! Kept short (`cargo bench -p gyre-bench`); the figure to watch is d = 384, b = 4.
//! `prepare`: what a 4-bit staged query costs before its scan (rotation and float tables,
//! the sign plane's u8 tables, the `dot4` weights), per query; a split single query runs it
//! on one thread.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gyre::kernels::dot4;
use gyre::quantizer::Codebook;
use gyre::random::SeededRng;
use gyre::{EncodedBatch, Quantizer, QuantizerConfig};
use std::hint::black_box;
use std::time::Duration;

const VECTORS: usize = 1000;

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(VECTORS as u64));
    for dim in [384usize, 768, 1536] {
        let mut rng = SeededRng::for_data(1);
        let mut rows = vec![0.0f32; VECTORS * dim];
        for row in rows.chunks_exact_mut(dim) {
            rng.unit_vector(row);
        }
        for bits in [1u8, 2, 4] {
            let q = Quantizer::new(QuantizerConfig::new(dim, bits)).expect("valid config");
            let mut encoder = q.encoder();
            let mut batch = EncodedBatch::new(&q);
            batch.reserve(VECTORS);
            group.bench_function(format!("d{dim}/b{bits}"), |b| {
                b.iter(|| {
                    let mut out = EncodedBatch::new(&q);
                    out.reserve(VECTORS);
                    for row in rows.chunks_exact(dim) {
                        out.push(&mut encoder, row).expect("finite input");
                    }
                    black_box(out.len())
                })
            });
        }
    }
    group.finish();
}

fn prepare(c: &mut Criterion) {
    let mut group = c.benchmark_group("prepare");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(1));
    for dim in [384usize, 768, 1536] {
        let mut rng = SeededRng::for_data(2);
        let mut query = vec![0.0f32; dim];
        rng.unit_vector(&mut query);
        let q = Quantizer::new(QuantizerConfig::new(dim, 4)).expect("valid config");
        let sign = Codebook::get(dim, 1).expect("valid codebook");
        group.bench_function(format!("d{dim}/b4/staged"), |b| {
            b.iter(|| {
                let lut = q.prepare_query(black_box(&query)).expect("finite query");
                let plane = lut.sign_plane_lut(&sign);
                let weights = dot4::Query::new(lut.rotated());
                black_box((plane, weights.zero))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, encode, prepare);
criterion_main!(benches);
