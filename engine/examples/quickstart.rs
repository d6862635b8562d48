//! Create a collection on disk, write, search, delete, reopen.
//!
//! `cargo run --release -p gyre --example quickstart [DATA_DIR]`

use gyre::random::SeededRng;
use gyre::{CollectionConfig, Database, Metric, SearchOptions};

fn main() -> Result<(), gyre::Error> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "gyre-quickstart-data".into());
    let dim = 128;
    let mut rng = SeededRng::for_data(1);
    let rows: Vec<f32> = (0..10_000 * dim).map(|_| rng.gaussian() as f32).collect();
    let ids: Vec<u64> = (0..10_000).collect();
    {
        let db = Database::open(&dir)?;
        let docs = match db.collection("docs") {
            Ok(c) => c,
            Err(_) => db.create_collection(
                "docs",
                CollectionConfig {
                    metric: Metric::Cosine,
                    bits: 4,
                    ..CollectionConfig::new(dim)
                },
            )?,
        };
        // Each upsert is durable when it returns (fsync per batch by default).
        for (chunk, part) in ids.chunks(1000).zip(rows.chunks(1000 * dim)) {
            docs.upsert(chunk, part)?;
        }
        docs.delete(&[42])?;
        docs.flush()?; // seal the memtable into an mmapped segment
    }
    // Reopen: segments are mapped, not loaded.
    let db = Database::open(&dir)?;
    let docs = db.collection("docs")?;
    let opts = SearchOptions::recommended(docs.config());
    let hits = docs.search(&rows[7 * dim..8 * dim], 5, &opts)?;
    let info = docs.info()?;
    let out = format!(
        "{} live points in {} segment(s), {} bytes on disk; nearest to point 7: {:?}",
        info.live,
        info.segments.len(),
        info.disk_bytes,
        hits.iter().map(|h| (h.id, h.score)).collect::<Vec<_>>()
    );
    #[allow(clippy::print_stdout)]
    {
        println!("{out}");
    }
    assert_eq!(hits[0].id, 7);
    Ok(())
}
