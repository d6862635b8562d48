//! Encode throughput on one thread: vectors/s for the Hadamard rotation at embedding sizes.
//! Kept short (`cargo bench -p gyre-bench`); the figure to watch is d = 384, b = 4.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
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

criterion_group!(benches, encode);
criterion_main!(benches);
