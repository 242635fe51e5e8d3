//! Seeded synthetic embeddings for tests and benchmarks: unit vectors in clusters, the shape of
//! re-id features (several views of each person near one another).

use crate::dataset::rng::SplitMix64;

/// `n` unit vectors (row-major, `n × dim`) around `clusters` random unit centres. `spread` is
/// the noise norm relative to the centre: 0.3 gives same-cluster cosines ≈ 0.9, 1.0 ≈ 0.5.
pub fn clustered(n: usize, dim: usize, clusters: usize, spread: f32, seed: u64) -> Vec<f32> {
    clustered_labelled(n, dim, clusters, spread, seed).0
}

/// Like [`clustered`], also returning each vector's cluster.
pub fn clustered_labelled(
    n: usize,
    dim: usize,
    clusters: usize,
    spread: f32,
    seed: u64,
) -> (Vec<f32>, Vec<usize>) {
    let mut rng = SplitMix64::new(seed);
    let clusters = clusters.max(1);
    let mut centres = vec![0f32; clusters * dim];
    for c in centres.chunks_exact_mut(dim) {
        for x in c.iter_mut() {
            *x = rng.normal();
        }
        normalise(c);
    }
    let sigma = spread / (dim as f32).sqrt();
    let mut out = vec![0f32; n * dim];
    let mut labels = Vec::with_capacity(n);
    for row in out.chunks_exact_mut(dim) {
        let c = rng.below(clusters);
        labels.push(c);
        for (j, x) in row.iter_mut().enumerate() {
            *x = centres[c * dim + j] + sigma * rng.normal();
        }
        normalise(row);
    }
    (out, labels)
}

/// Re-id-like features: `n` views of `people` persons (each view picked at random), the
/// persons in `looks` groups of similar appearance (think: same uniform). With the spreads used
/// in the tests (0.8 between persons of a look, 0.6 between views of a person) a view matches
/// its own person's other views at cosine ≈ 0.74, the same look at ≈ 0.45, anyone else at ≈ 0.
/// Returns the vectors and each view's person.
pub fn people(
    n: usize,
    dim: usize,
    people: usize,
    looks: usize,
    person_spread: f32,
    view_spread: f32,
    seed: u64,
) -> (Vec<f32>, Vec<usize>) {
    let mut rng = SplitMix64::new(seed);
    let looks: Vec<Vec<f32>> = (0..looks.max(1))
        .map(|_| random_unit(dim, &mut rng))
        .collect();
    let persons: Vec<Vec<f32>> = (0..people.max(1))
        .map(|p| jitter(&looks[p % looks.len()], person_spread, &mut rng))
        .collect();
    let mut out = Vec::with_capacity(n * dim);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let p = rng.below(persons.len());
        labels.push(p);
        out.extend(jitter(&persons[p], view_spread, &mut rng));
    }
    (out, labels)
}

/// A unit vector near `base` (noise norm `spread` relative to it).
pub fn jitter(base: &[f32], spread: f32, rng: &mut SplitMix64) -> Vec<f32> {
    let sigma = spread / (base.len() as f32).sqrt();
    let mut v: Vec<f32> = base.iter().map(|b| b + sigma * rng.normal()).collect();
    normalise(&mut v);
    v
}

/// A random unit vector.
pub fn random_unit(dim: usize, rng: &mut SplitMix64) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dim).map(|_| rng.normal()).collect();
    normalise(&mut v);
    v
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}
