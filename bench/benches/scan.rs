//! FastScan kernel throughput: vectors scored per second on one thread, per kernel, bit width
//! and dimension (`cargo bench -p gyre-bench --bench scan`). Regressions in the kernels show
//! here before they show in the recall runner.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gyre::kernels::fastscan::{Kernel, MAX_MULTI, MAX_TOP, NARROW_TOP, TopQuery};
use gyre::kernels::{Rows, Sink, dot4};
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

/// A sink whose bound no key reaches: the fused scan's arithmetic and compares alone.
struct Never;

impl Sink for Never {
    fn bound(&self) -> f32 {
        f32::INFINITY
    }
    fn offer(&mut self, _row: usize, _key: f32) {}
}

/// Key factors 1, offsets 0 and every row live, for `blocks` blocks.
fn all_live(blocks: usize) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
    let rows = blocks * BLOCK;
    (vec![1.0; rows], vec![0.0; rows], vec![u32::MAX; blocks])
}

/// Blocks of the streaming variant: the sign plane of 100k rows at d = 768 is larger than L2,
/// as a single-query staged search meets it (the L2-sized runs hide how a kernel streams).
const STREAM_BLOCKS: usize = 100_000usize.div_ceil(BLOCK);

/// The fused scan (`scan_top`) over the sign plane of 4-bit codes (narrow tables, what the
/// staged search's first stage runs) and over 2-bit codes (wide tables), one query and
/// `MAX_MULTI` and `MAX_TOP` at once, in L2; and the sign plane of 100k rows at d = 768 for one
/// query (`d768x100k`). Throughput counts row-queries.
fn scan_top(c: &mut Criterion) {
    let mut group = c.benchmark_group("fastscan_top");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let mut rng = SeededRng::for_data(5);
    let sizes = [
        (384usize, BLOCKS, ""),
        (768, BLOCKS, ""),
        (768, STREAM_BLOCKS, "x100k"),
    ];
    for (dim, blocks, size) in sizes {
        for (what, bits, top) in [("sign", 1u8, NARROW_TOP), ("b2", 2, u8::MAX)] {
            let streaming = blocks != BLOCKS;
            if streaming && what != "sign" {
                continue;
            }
            let (_, columns) = nibbles(dim, bits);
            let rows = blocks * BLOCK;
            let codes: Vec<u8> = (0..blocks * columns * 16)
                .map(|_| rng.next_u64() as u8)
                .collect();
            let tables: Vec<Vec<u8>> = (0..MAX_TOP)
                .map(|_| {
                    (0..columns * 16)
                        .map(|_| (rng.next_u64() % (u64::from(top) + 1)) as u8)
                        .collect()
                })
                .collect();
            let queries: Vec<TopQuery<'_>> = tables
                .iter()
                .map(|t| TopQuery {
                    tables: t,
                    delta: 0.01,
                    bias: -1.0,
                })
                .collect();
            let (factor, offset, masks) = all_live(blocks);
            let widths: &[usize] = if streaming {
                &[1]
            } else {
                &[1, MAX_MULTI, MAX_TOP]
            };
            for &q in widths {
                group.throughput(Throughput::Elements((rows * q) as u64));
                for kernel in Kernel::available() {
                    let id = format!("{}/d{dim}{size}/{what}/q{q}", kernel.name());
                    group.bench_function(id, |b| {
                        b.iter(|| {
                            let mut sinks: Vec<Never> = (0..q).map(|_| Never).collect();
                            let r = Rows {
                                factor: &factor,
                                offset: &offset,
                                masks: &masks,
                            };
                            kernel.scan_top(
                                black_box(&codes),
                                columns,
                                &queries[..q],
                                r,
                                &mut sinks,
                            );
                        })
                    });
                }
            }
        }
    }
    group.finish();
}

/// The fused dot4 scan (`dot4_top`) over interleaved 4-bit codes: one query, and the kernel's
/// full width; throughput counts row-queries.
fn dot4_top(c: &mut Criterion) {
    let mut group = c.benchmark_group("dot4_top");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let mut rng = SeededRng::for_data(7);
    let centroids: Vec<f32> = (0..16).map(|k| (k as f32 - 7.5) / 8.0).collect();
    let levels = dot4::Levels::new(&centroids);
    for dim in [384usize, 768, 1536] {
        let rows = BLOCKS * BLOCK;
        let codes: Vec<u8> = (0..BLOCKS * dot4::groups(dim) * dot4::GROUP_BYTES)
            .map(|_| rng.next_u64() as u8)
            .collect();
        let queries: Vec<dot4::Query> = (0..dot4::MAX_QUERIES)
            .map(|_| {
                let q: Vec<f32> = (0..dim).map(|_| rng.gaussian() as f32).collect();
                dot4::Query::new(&q)
            })
            .collect();
        let refs: Vec<&dot4::Query> = queries.iter().collect();
        let scales = [1e-4f32; dot4::MAX_QUERIES];
        let (factor, offset, masks) = all_live(BLOCKS);
        for kernel in Kernel::available() {
            let width = kernel.dot4_width();
            let mut widths = vec![1, 8.min(width), width];
            widths.dedup();
            for q in widths {
                group.throughput(Throughput::Elements((rows * q) as u64));
                group.bench_function(format!("{}/d{dim}/q{q}", kernel.name()), |b| {
                    b.iter(|| {
                        let mut sinks: Vec<Never> = (0..q).map(|_| Never).collect();
                        let r = Rows {
                            factor: &factor,
                            offset: &offset,
                            masks: &masks,
                        };
                        kernel.dot4_top(
                            black_box(&codes),
                            &levels,
                            &refs[..q],
                            &scales[..q],
                            r,
                            &mut sinks,
                        );
                    })
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, scan, scan_top, dot4_top);
criterion_main!(benches);
