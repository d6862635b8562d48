//! FastScan kernel throughput: vectors scored per second on one thread, per kernel, bit width
//! and dimension (`cargo bench -p gyre-bench --bench scan`). Regressions in the kernels show
//! here before they show in the recall runner.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gyre::kernels::fastscan::Kernel;
use gyre::quantizer::layout::{BLOCK, nibbles};
use gyre::random::SeededRng;
use std::hint::black_box;
use std::time::Duration;

/// 2048 vectors per iteration: 64 blocks, the chunk the flat index scans at once.
const BLOCKS: usize = 64;

fn scan(c: &mut Criterion) {
    let mut group = c.benchmark_group("fastscan");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .throughput(Throughput::Elements((BLOCKS * BLOCK) as u64));
    let mut rng = SeededRng::for_data(3);
    for dim in [384usize, 768, 1536] {
        for bits in [1u8, 2, 4] {
            let (_, columns) = nibbles(dim, bits);
            let codes: Vec<u8> = (0..BLOCKS * columns * 16)
                .map(|_| rng.next_u64() as u8)
                .collect();
            let tables: Vec<u8> = (0..columns * 16).map(|_| rng.next_u64() as u8).collect();
            let mut out = vec![0u32; BLOCKS * BLOCK];
            for kernel in Kernel::available() {
                group.bench_function(format!("{}/d{dim}/b{bits}", kernel.name()), |b| {
                    b.iter(|| {
                        kernel.scan(black_box(&codes), columns, black_box(&tables), &mut out);
                        black_box(out[0])
                    })
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, scan);
criterion_main!(benches);
