use super::*;
use crate::quantizer::CoordinateLaw;
use crate::random::SeededRng;

fn rotations(dim: usize, seed: u64) -> [Rotation; 2] {
    [
        Rotation::new(RotationKind::Hadamard, dim, seed).unwrap(),
        Rotation::new(RotationKind::Dense, dim, seed).unwrap(),
    ]
}

fn random_vector(rng: &mut SeededRng, dim: usize, support: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; dim];
    rng.unit_vector(&mut v[..support]);
    v
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()
}

#[test]
fn hadamard_preserves_norms_and_inverts_for_every_small_dim() {
    let mut rng = SeededRng::for_data(1);
    let dims: Vec<usize> = (2..=300)
        .chain([384, 511, 512, 513, 768, 1000, 1536, 3072, 4096])
        .collect();
    for dim in dims {
        let r = Rotation::new(RotationKind::Hadamard, dim, dim as u64).unwrap();
        let mut scratch = vec![0.0; dim];
        for _ in 0..4 {
            let x: Vec<f32> = (0..dim).map(|_| rng.gaussian() as f32 * 3.0).collect();
            let mut y = x.clone();
            r.apply(&mut y, &mut scratch);
            let rel = (norm(&y) - norm(&x)).abs() / norm(&x);
            assert!(rel < 1e-5, "dim={dim}: norm changed by {rel}");
            r.inverse(&mut y, &mut scratch);
            let err = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(err < 1e-5 * 3.0 * 4.0, "dim={dim}: inverse error {err}");
        }
    }
}

/// Builds the matrix of a rotation column by column and checks `ΠᵀΠ = I`.
fn max_orthogonality_error(r: &Rotation) -> f64 {
    let d = r.dim();
    let mut cols = Vec::with_capacity(d * d);
    let mut scratch = vec![0.0; d];
    for i in 0..d {
        let mut e = vec![0.0f32; d];
        e[i] = 1.0;
        r.apply(&mut e, &mut scratch);
        cols.extend(e.iter().map(|&x| f64::from(x)));
    }
    let mut worst = 0.0f64;
    for i in 0..d {
        for j in i..d {
            let dot: f64 = (0..d).map(|k| cols[i * d + k] * cols[j * d + k]).sum();
            let want = if i == j { 1.0 } else { 0.0 };
            worst = worst.max((dot - want).abs());
        }
    }
    worst
}

#[test]
fn rotations_are_orthogonal() {
    for dim in [2, 3, 7, 64, 96, 200, 384] {
        for r in rotations(dim, 5) {
            let err = max_orthogonality_error(&r);
            assert!(
                err < 1e-5,
                "{:?} dim={dim}: ||ΠᵀΠ - I||_max = {err}",
                r.kind()
            );
        }
    }
}

#[test]
fn dense_matrix_is_orthogonal_at_embedding_sizes() {
    let r = DenseRotation::new(768, 99).unwrap();
    let m = r.matrix();
    let d = 768;
    let mut worst = 0.0f64;
    for i in (0..d).step_by(7) {
        for j in 0..d {
            let dot: f64 = (0..d)
                .map(|k| f64::from(m[k * d + i]) * f64::from(m[k * d + j]))
                .sum();
            worst = worst.max((dot - if i == j { 1.0 } else { 0.0 }).abs());
        }
    }
    assert!(worst < 1e-5, "||ΠᵀΠ - I||_max = {worst}");
}

#[test]
fn same_seed_same_rotation_other_seed_other_rotation() {
    for kind in [RotationKind::Hadamard, RotationKind::Dense] {
        let a = Rotation::new(kind, 100, 1).unwrap();
        let b = Rotation::new(kind, 100, 1).unwrap();
        let c = Rotation::new(kind, 100, 2).unwrap();
        let x: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).cos()).collect();
        let (mut ya, mut yb, mut yc) = (x.clone(), x.clone(), x.clone());
        let mut s = vec![0.0; 100];
        a.apply(&mut ya, &mut s);
        b.apply(&mut yb, &mut s);
        c.apply(&mut yc, &mut s);
        assert_eq!(ya, yb, "{kind:?}");
        assert_ne!(ya, yc, "{kind:?}");
    }
}

#[test]
fn batch_forms_match_single() {
    let mut rng = SeededRng::for_data(3);
    for r in rotations(50, 8) {
        let rows: Vec<f32> = (0..50 * 7).map(|_| rng.gaussian() as f32).collect();
        let mut batch = rows.clone();
        r.apply_batch(&mut batch).unwrap();
        let mut scratch = vec![0.0; 50];
        for (i, row) in rows.chunks_exact(50).enumerate() {
            let mut y = row.to_vec();
            r.apply(&mut y, &mut scratch);
            assert_eq!(&batch[i * 50..(i + 1) * 50], &y[..]);
        }
        r.inverse_batch(&mut batch).unwrap();
        assert!(batch.iter().zip(&rows).all(|(a, b)| (a - b).abs() < 1e-5));
        assert!(r.apply_batch(&mut vec![0.0; 51]).is_err());
    }
}

#[test]
fn rotations_report_their_coordinate_law() {
    for r in rotations(384, 1) {
        assert_eq!(r.coordinate_law().unwrap().dim(), 384);
    }
    let r = Rotation::new(RotationKind::Hadamard, 2, 1).unwrap();
    assert!(
        r.coordinate_law().is_err(),
        "d = 2 has the arcsine law, which Gyre refuses"
    );
}

#[test]
fn tiny_dimensions_are_refused() {
    for kind in [RotationKind::Hadamard, RotationKind::Dense] {
        assert!(matches!(
            Rotation::new(kind, 0, 0),
            Err(crate::Error::InvalidDimension { .. })
        ));
        assert!(matches!(
            Rotation::new(kind, 1, 0),
            Err(crate::Error::InvalidDimension { .. })
        ));
    }
}

/// Kolmogorov-Smirnov distance between pooled samples and `f_d`.
fn ks_distance(dim: usize, mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    let cdf = CoordinateLaw::new(dim).unwrap().cdf();
    let n = samples.len() as f64;
    let mut worst = 0.0f64;
    for (i, &x) in samples.iter().enumerate() {
        let f = cdf.at(x);
        worst = worst
            .max((f - i as f64 / n).abs())
            .max((f - (i + 1) as f64 / n).abs());
    }
    worst
}

/// Pooled rotated coordinates of random unit vectors supported on the first `support`
/// coordinates, all through one rotation.
fn rotated_samples(r: &Rotation, vectors: usize, support: usize, seed: u64) -> Vec<f64> {
    let d = r.dim();
    let mut rng = SeededRng::for_data(seed);
    let mut scratch = vec![0.0; d];
    let mut samples = Vec::with_capacity(vectors * d);
    for _ in 0..vectors {
        let mut v = random_vector(&mut rng, d, support);
        r.apply(&mut v, &mut scratch);
        samples.extend(v.iter().map(|&x| f64::from(x)));
    }
    samples
}

/// Pooled coordinates of `Π e_0` over `seeds` independent rotations.
fn one_hot_samples(kind: RotationKind, dim: usize, seeds: u64, rounds: Option<usize>) -> Vec<f64> {
    let mut scratch = vec![0.0; dim];
    let mut samples = Vec::new();
    for seed in 0..seeds {
        let r = match rounds {
            Some(n) => Rotation::Hadamard(HadamardRotation::with_rounds(dim, seed, n).unwrap()),
            None => Rotation::new(kind, dim, seed).unwrap(),
        };
        let mut e = vec![0.0f32; dim];
        e[0] = 1.0;
        r.apply(&mut e, &mut scratch);
        samples.extend(e.iter().map(|&x| f64::from(x)));
    }
    samples
}

#[test]
fn rotated_coordinates_follow_the_beta_law() {
    // ~200k pooled coordinates per case: sampling noise in the KS distance is ~0.003.
    for (dim, vectors) in [(64usize, 3000usize), (384, 500), (1536, 130)] {
        for r in rotations(dim, 17) {
            // Uniform directions, and directions whose energy sits in the first 4 or 16
            // coordinates (matryoshka-style inputs).
            for support in [dim, 16, 4] {
                let ks = ks_distance(
                    dim,
                    rotated_samples(&r, vectors, support, dim as u64 + support as u64),
                );
                assert!(
                    ks < 0.01,
                    "{:?} dim={dim} support={support}: KS = {ks}",
                    r.kind()
                );
            }
        }
    }
}

#[test]
fn one_hot_inputs_follow_the_beta_law_across_seeds() {
    // A single basis vector is the hardest input for a structured rotation: every coordinate
    // of its image must still look like a draw from f_d once the seed is random.
    for (dim, seeds) in [(64usize, 3000u64), (384, 500), (1536, 130)] {
        let ks = ks_distance(
            dim,
            one_hot_samples(RotationKind::Hadamard, dim, seeds, None),
        );
        assert!(ks < 0.01, "Hadamard dim={dim}: KS = {ks}");
    }
    let ks = ks_distance(64, one_hot_samples(RotationKind::Dense, 64, 3000, None));
    assert!(ks < 0.01, "Dense dim=64: KS = {ks}");
}

#[test]
fn one_round_is_not_enough_for_sparse_inputs() {
    // Guards the tests above: with one round a one-hot input lands on ±1/√P exactly, which the
    // KS check must reject.
    let ks = ks_distance(
        64,
        one_hot_samples(RotationKind::Hadamard, 64, 3000, Some(1)),
    );
    assert!(ks > 0.1, "KS = {ks}");
}
