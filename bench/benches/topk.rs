//! The bounded collector a scan feeds (`cargo bench -p gyre-bench --bench topk`): a staged
//! search's shortlist of 2,560 over 100k rows (what `--staged 32 --oversample 8` keeps at
//! k = 10), pushed in row order with random keys, then handed on by id or unordered.

use criterion::{Criterion, criterion_group, criterion_main};
use gyre::random::SeededRng;
use gyre::search::TopK;
use std::hint::black_box;
use std::time::Duration;

fn topk(c: &mut Criterion) {
    let mut group = c.benchmark_group("topk");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    let mut rng = SeededRng::for_data(13);
    let keys: Vec<f32> = (0..100_000).map(|_| rng.gaussian() as f32).collect();
    for k in [100usize, 2_560] {
        let fill = || {
            let mut top = TopK::new(k);
            for (i, &key) in keys.iter().enumerate() {
                top.push(i as u64, key);
            }
            top
        };
        group.bench_function(format!("push100k/k{k}"), |b| b.iter(|| black_box(fill())));
        let full = fill();
        group.bench_function(format!("into_by_id/k{k}"), |b| {
            b.iter(|| black_box(full.clone().into_by_id()))
        });
        group.bench_function(format!("into_unordered/k{k}"), |b| {
            b.iter(|| black_box(full.clone().into_unordered()))
        });
    }
    group.finish();
}

criterion_group!(benches, topk);
criterion_main!(benches);
