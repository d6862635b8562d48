use proptest::prelude::*;

use super::*;
use crate::kernels::dot_f32;
use crate::random::SeededRng;

fn config(dim: usize, bits: u8, variant: Variant, rotation: RotationKind) -> QuantizerConfig {
    QuantizerConfig {
        dim,
        bits,
        variant,
        rotation,
        seed: 7,
    }
}

fn random_rows(seed: u64, n: usize, dim: usize) -> Vec<f32> {
    let mut rng = SeededRng::for_data(seed);
    let mut v = vec![0.0f32; n * dim];
    for row in v.chunks_exact_mut(dim) {
        rng.unit_vector(row);
    }
    v
}

/// FNV-1a over everything an encoding produces.
fn fingerprint(batch: &EncodedBatch) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    };
    eat(batch.codes());
    eat(batch.sketches());
    for s in batch.scalars() {
        eat(&s.norm.to_le_bytes());
        eat(&s.scale.to_le_bytes());
        eat(&s.residual_norm.to_le_bytes());
    }
    h
}

#[test]
fn encoding_is_deterministic_and_seeded() {
    for rotation in [RotationKind::Hadamard, RotationKind::Dense] {
        for variant in [Variant::Mse, Variant::Prod] {
            let rows = random_rows(1, 50, 96);
            let a = Quantizer::new(config(96, 3, variant, rotation)).unwrap();
            let b = Quantizer::new(config(96, 3, variant, rotation)).unwrap();
            let mut other = config(96, 3, variant, rotation);
            other.seed = 8;
            let c = Quantizer::new(other).unwrap();
            let fa = fingerprint(&a.encode_batch(&rows).unwrap());
            assert_eq!(fa, fingerprint(&b.encode_batch(&rows).unwrap()));
            assert_ne!(fa, fingerprint(&c.encode_batch(&rows).unwrap()));
        }
    }
}

#[test]
fn hadamard_codes_are_pinned() {
    // The Hadamard path uses only portable arithmetic, so these fingerprints must hold on every
    // platform and build. A change here changes every stored code: bump the format version.
    let rows = random_rows(2026, 200, 384);
    let got: Vec<u64> = [(4u8, Variant::Mse), (2, Variant::Mse), (3, Variant::Prod)]
        .iter()
        .map(|&(bits, variant)| {
            let q = Quantizer::new(config(384, bits, variant, RotationKind::Hadamard)).unwrap();
            fingerprint(&q.encode_batch(&rows).unwrap())
        })
        .collect();
    assert_eq!(got, GOLDEN_FINGERPRINTS, "encoded bytes changed");
}

const GOLDEN_FINGERPRINTS: [u64; 3] = [
    18050964257591640859,
    945818026573894921,
    14503001745792451348,
];

#[test]
fn reconstruction_error_matches_the_codebook() {
    for rotation in [RotationKind::Hadamard, RotationKind::Dense] {
        for bits in [1u8, 2, 3, 4, 8] {
            let dim = 128;
            let q = Quantizer::new(config(dim, bits, Variant::Mse, rotation)).unwrap();
            let n = 2000;
            let rows = random_rows(3, n, dim);
            let batch = q.encode_batch(&rows).unwrap();
            let mut out = vec![0.0; dim];
            let mut total = 0.0f64;
            for (i, row) in rows.chunks_exact(dim).enumerate() {
                q.decode(batch.get(i), &mut out).unwrap();
                total += row
                    .iter()
                    .zip(&out)
                    .map(|(a, b)| f64::from(a - b).powi(2))
                    .sum::<f64>();
            }
            let measured = total / n as f64;
            let expected = q.codebook().unwrap().expected_mse();
            assert!(
                (measured - expected).abs() < 0.04 * expected,
                "{rotation:?} b={bits}: measured D_mse {measured} vs {expected}"
            );
        }
    }
}

#[test]
fn estimators_are_calibrated() {
    // Over many random pairs: prod and renormalised mse are unbiased, plain mse shrinks by
    // about (1 - D_mse).
    let dim = 256;
    let n = 4000;
    let data = random_rows(4, n, dim);
    let queries = random_rows(5, n, dim);
    let mean_err = |q: &Quantizer, est: Estimator| {
        let batch = q.encode_batch(&data).unwrap();
        let (mut sum, mut sum_true_sq) = (0.0f64, 0.0f64);
        for (i, (x, y)) in data
            .chunks_exact(dim)
            .zip(queries.chunks_exact(dim))
            .enumerate()
        {
            // Correlated pairs (y + x) so that <q, x> is far from 0 and a shrinkage shows.
            let query: Vec<f32> = x.iter().zip(y).map(|(a, b)| a + 0.5 * b).collect();
            let truth = f64::from(dot_f32(&query, x));
            let lut = q.prepare_query(&query).unwrap();
            sum += f64::from(lut.inner_product(batch.get(i), est)) - truth;
            sum_true_sq += truth;
        }
        (sum / n as f64, sum_true_sq / n as f64)
    };
    let mse = Quantizer::new(config(dim, 2, Variant::Mse, RotationKind::Hadamard)).unwrap();
    let d_mse = mse.codebook().unwrap().expected_mse();
    let (plain_bias, mean_truth) = mean_err(&mse, Estimator::Plain);
    assert!(
        (plain_bias / mean_truth + d_mse).abs() < 0.02,
        "plain bias {plain_bias} vs -{d_mse}·{mean_truth}"
    );
    let (renorm_bias, _) = mean_err(&mse, Estimator::Renormalized);
    assert!(
        renorm_bias.abs() < 0.2 * plain_bias.abs(),
        "renormalised bias {renorm_bias}"
    );
    let prod = Quantizer::new(config(dim, 3, Variant::Prod, RotationKind::Hadamard)).unwrap();
    let (prod_bias, _) = mean_err(&prod, Estimator::Plain);
    assert!(prod_bias.abs() < 0.01, "prod bias {prod_bias}");
}

#[test]
fn scaling_a_vector_by_a_power_of_two_keeps_its_codes() {
    let q = Quantizer::new(config(100, 4, Variant::Mse, RotationKind::Hadamard)).unwrap();
    let x = random_rows(6, 1, 100);
    let big: Vec<f32> = x.iter().map(|v| v * 1024.0).collect();
    let (a, b) = (q.encode_batch(&x).unwrap(), q.encode_batch(&big).unwrap());
    assert_eq!(a.codes(), b.codes());
    assert_eq!(a.get(0).scalars.norm * 1024.0, b.get(0).scalars.norm);
}

#[test]
fn prod_at_one_bit_is_all_sketch() {
    let q = Quantizer::new(config(64, 1, Variant::Prod, RotationKind::Hadamard)).unwrap();
    assert_eq!(q.code_bytes(), 0);
    assert_eq!(q.sketch_bytes(), 8);
    assert!(q.codebook().is_none());
    let rows = random_rows(7, 3, 64);
    let batch = q.encode_batch(&rows).unwrap();
    assert!((batch.get(0).scalars.residual_norm - 1.0).abs() < 1e-5);
}

#[test]
fn bad_input_gives_typed_errors() {
    for (dim, bits, want) in [
        (64usize, 0u8, "bits"),
        (64, 9, "bits"),
        (0, 4, "dim"),
        (1, 4, "dim"),
        (2, 4, "dim"),
        (MAX_DIM + 1, 4, "dim"),
    ] {
        let err = Quantizer::new(QuantizerConfig::new(dim, bits)).unwrap_err();
        match want {
            "bits" => assert!(matches!(err, Error::InvalidBits { .. }), "{err}"),
            _ => assert!(matches!(err, Error::InvalidDimension { .. }), "{err}"),
        }
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
    }
    let err = Quantizer::new(config(
        MAX_DENSE_DIM + 1,
        4,
        Variant::Mse,
        RotationKind::Dense,
    ))
    .unwrap_err();
    assert!(err.to_string().contains("hadamard"), "{err}");

    let q = Quantizer::new(QuantizerConfig::new(4, 4)).unwrap();
    let mut enc = q.encoder();
    let mut codes = vec![0u8; q.code_bytes()];
    let mut check = |x: &[f32]| enc.encode_into(x, &mut codes, &mut []).unwrap_err();
    assert_eq!(
        check(&[1.0, 2.0, 3.0]),
        Error::DimensionMismatch {
            expected: 4,
            actual: 3
        }
    );
    assert!(matches!(
        check(&[1.0, f32::NAN, 0.0, 0.0]),
        Error::NonFinite { index: 1, .. }
    ));
    assert!(matches!(
        check(&[1.0, 0.0, f32::NEG_INFINITY, 0.0]),
        Error::NonFinite { index: 2, .. }
    ));
    assert_eq!(check(&[0.0; 4]), Error::ZeroVector);
    assert!(matches!(
        check(&[f32::MAX; 4]),
        Error::NormOutOfRange { .. }
    ));
    // The documented range, at its edges (norms of [a, 0, 0, 0] are |a|).
    assert!(matches!(
        check(&[1e-11, 0.0, 0.0, 0.0]),
        Error::NormOutOfRange { .. }
    ));
    assert!(matches!(
        check(&[1e-45, 1e-45, 0.0, 0.0]),
        Error::NormOutOfRange { .. }
    ));
    assert!(matches!(
        check(&[2e15, 0.0, 0.0, 0.0]),
        Error::NormOutOfRange { .. }
    ));
    assert!(matches!(
        q.prepare_query(&[1.0; 5]),
        Err(Error::DimensionMismatch { .. })
    ));
    assert!(matches!(
        q.prepare_query(&[1.0, 1.0, 1.0, f32::NAN]),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        q.encode_batch(&[1.0; 6]),
        Err(Error::InvalidArgument { .. })
    ));
    let batch = q.encode_batch(&[1.0; 4]).unwrap();
    assert!(q.decode(batch.get(0), &mut [0.0; 3]).is_err());
    // A failed push leaves the batch unchanged.
    let mut batch = EncodedBatch::new(&q);
    let mut enc = q.encoder();
    assert!(batch.push(&mut enc, &[0.0; 4]).is_err());
    assert!(batch.is_empty() && batch.codes().is_empty());
}

/// Norms below `MIN_NORM` (where f32 scores underflow) are refused, subnormal components
/// included; a vector just inside the range encodes to the same codes as its unit direction.
#[test]
fn norms_outside_the_documented_range_are_refused() {
    let q = Quantizer::new(QuantizerConfig::new(8, 4)).unwrap();
    let tiny = [1e-30f32, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2e-30];
    assert!(matches!(
        q.encode_batch(&tiny),
        Err(Error::NormOutOfRange { .. })
    ));
    let sub = [f32::from_bits(1); 8];
    assert!(matches!(
        q.encode_batch(&sub),
        Err(Error::NormOutOfRange { .. })
    ));
    let unit: Vec<f32> = [3.0f32, -1.0, 0.5, 0.0, 2.0, -2.0, 1.0, 0.25]
        .iter()
        .map(|x| x / 4.5)
        .collect();
    let small: Vec<f32> = unit.iter().map(|x| x * 2e-10).collect();
    let (a, b) = (
        q.encode_batch(&unit).unwrap(),
        q.encode_batch(&small).unwrap(),
    );
    assert_eq!(a.get(0).codes, b.get(0).codes);
    assert!(b.get(0).scalars.norm > 0.0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The lookup-table estimate equals the inner product with the decoded vector: the query
    /// path and the decode path agree on what a code means.
    #[test]
    fn lut_estimate_equals_dot_with_decoded(
        dim in 3usize..200,
        bits in 1u8..=8,
        prod in any::<bool>(),
        dense in any::<bool>(),
        seed in any::<u64>(),
        scale in -3i32..3,
    ) {
        let variant = if prod { Variant::Prod } else { Variant::Mse };
        let rotation = if dense { RotationKind::Dense } else { RotationKind::Hadamard };
        let q = Quantizer::new(QuantizerConfig { dim, bits, variant, rotation, seed }).unwrap();
        let mut rng = SeededRng::for_data(seed);
        let s = 10f32.powi(scale);
        let x: Vec<f32> = (0..dim).map(|_| rng.gaussian() as f32 * s).collect();
        let query: Vec<f32> = (0..dim).map(|_| rng.gaussian() as f32).collect();
        let batch = q.encode_batch(&x).unwrap();
        let mut decoded = vec![0.0; dim];
        q.decode(batch.get(0), &mut decoded).unwrap();
        let lut = q.prepare_query(&query).unwrap();
        let est = lut.inner_product(batch.get(0), Estimator::Plain);
        let direct = dot_f32(&query, &decoded);
        let magnitude = lut.norm() * batch.get(0).scalars.norm;
        prop_assert!((est - direct).abs() <= 1e-4 * magnitude, "{est} vs {direct}");
        // And the reconstruction is close: relative error shrinks with bits.
        let err: f64 = x.iter().zip(&decoded).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>().sqrt();
        let norm: f64 = x.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
        // A 1-bit prod code is all QJL sketch, whose reconstruction error is about 1.25‖x‖
        // with a wide spread at small d (worst of 23,880 draws over d = 3..200: 2.48, at d = 5).
        let bound = if prod && bits == 1 { 3.0 } else { 1.5 };
        prop_assert!(err <= bound * norm, "relative error {}", err / norm);
        if bits == 8 && !prod {
            prop_assert!(err <= 0.05 * norm, "8-bit relative error {}", err / norm);
        }
    }
}

/// The u8 nibble tables (built coordinate by coordinate) give every code an integer sum whose
/// estimate `delta · S + bias` is within half a step per column of the float estimate, for
/// every dimension from 3 to 70 (and 384) and the widths FastScan scans directly.
#[test]
fn nibble_tables_estimate_the_float_tables() {
    let mut rng = SeededRng::for_data(41);
    for bits in [1u8, 2, 4] {
        for dim in (3..=70).chain([384]) {
            let q = Quantizer::new(config(dim, bits, Variant::Mse, RotationKind::Dense)).unwrap();
            let query = random_rows(dim as u64, 1, dim);
            let lut = q.prepare_query(&query).unwrap();
            let nib = lut.nibble_lut().unwrap();
            let columns = nib.tables.len() / 16;
            let bytes = packing::packed_len(dim, bits);
            for _ in 0..20 {
                let mut codes: Vec<u8> = (0..bytes).map(|_| rng.next_u64() as u8).collect();
                // Unused high bits of the last byte are zero (the packing's invariant).
                let used = dim * bits as usize - 8 * (bytes - 1);
                if used < 8 {
                    codes[bytes - 1] &= (1u8 << used) - 1;
                }
                let sum: u32 = (0..columns)
                    .map(|m| {
                        let byte = codes.get(m / 2).copied().unwrap_or(0);
                        let nibble = if m % 2 == 0 { byte & 15 } else { byte >> 4 };
                        u32::from(nib.tables[16 * m + usize::from(nibble)])
                    })
                    .sum();
                let want = lut.code_dot(&codes);
                let got = nib.estimate(sum);
                let slack = columns as f32 * nib.delta / 2.0 + 1e-4;
                assert!(
                    (got - want).abs() <= slack,
                    "bits {bits} dim {dim}: {got} vs {want} (slack {slack})"
                );
            }
        }
    }
}
